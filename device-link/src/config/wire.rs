//! Conversions between the in-memory CRDT pieces and the `tidings.v1` config messages
//! that other implementations read (proto/tidings/v1/config.proto).

use tidings_proto::v1 as pb;

use super::crdt::{Lww, Mark, Marks};
use super::hlc::{DeviceId, Hlc, Stamp};

/// A stamp on the wire.
pub fn stamp_out(stamp: &Stamp) -> pb::HlcStamp {
    pb::HlcStamp {
        wall_ms: stamp.hlc.wall_ms,
        counter: stamp.hlc.counter,
        device: stamp.device.0.to_vec(),
    }
}

/// A stamp from the wire; `None` when the device id is not 16 bytes.
pub fn stamp_in(p: &pb::HlcStamp) -> Option<Stamp> {
    Some(Stamp {
        hlc: Hlc {
            wall_ms: p.wall_ms,
            counter: p.counter,
        },
        device: DeviceId::from_slice(&p.device)?,
    })
}

/// A field stamp inside an entry: left out when it equals the entry's existence stamp.
pub fn field_stamp_out(stamp: &Stamp, entry: Option<&Stamp>) -> Option<pb::HlcStamp> {
    (entry != Some(stamp)).then(|| stamp_out(stamp))
}

/// A field stamp inside an entry: a missing one means the entry's existence stamp.
/// `None` (ignore the register) when it is invalid, or missing without an existence stamp.
pub fn field_stamp_in(p: Option<&pb::HlcStamp>, entry: Option<&Stamp>) -> Option<Stamp> {
    match p {
        Some(p) => stamp_in(p),
        None => entry.copied(),
    }
}

/// A top-level register's stamp, which may not be left out.
pub fn top_stamp_in(p: Option<&pb::HlcStamp>) -> Option<Stamp> {
    p.and_then(stamp_in)
}

/// The existence register of an entry.
pub fn existence_out(e: &Lww<bool>) -> pb::Existence {
    pb::Existence {
        stamp: Some(stamp_out(&e.stamp)),
        present: e.value,
    }
}

/// The existence register of an entry from the wire.
pub fn existence_in(p: Option<&pb::Existence>) -> Option<Lww<bool>> {
    let p = p?;
    Some(Lww::new(top_stamp_in(p.stamp.as_ref())?, p.present))
}

/// Device marks on the wire, sorted by device.
pub fn marks_out(marks: &Marks) -> Vec<pb::DeviceMark> {
    marks
        .0
        .iter()
        .map(|(device, m)| pb::DeviceMark {
            device: device.0.to_vec(),
            clock_ms: m.clock_ms,
            seen: m
                .seen
                .iter()
                .map(|(d, wall_ms)| pb::SeenEntry {
                    device: d.0.to_vec(),
                    wall_ms: *wall_ms,
                })
                .collect(),
        })
        .collect()
}

/// Device marks from the wire; marks and cells with a bad device id are ignored, and
/// repeated devices join by maximum.
pub fn marks_in(p: &[pb::DeviceMark]) -> Marks {
    let mut marks = Marks::default();
    for pm in p {
        let Some(device) = DeviceId::from_slice(&pm.device) else {
            continue;
        };
        let mut mark = Mark {
            clock_ms: pm.clock_ms,
            ..Mark::default()
        };
        for cell in &pm.seen {
            if let Some(d) = DeviceId::from_slice(&cell.device) {
                let slot = mark.seen.entry(d).or_default();
                *slot = (*slot).max(cell.wall_ms);
            }
        }
        let mut one = Marks::default();
        one.0.insert(device, mark);
        marks.join(&one);
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_bad_devices_are_rejected() {
        let s = Stamp {
            hlc: Hlc {
                wall_ms: 1_700_000_000_000,
                counter: 3,
            },
            device: DeviceId([7; 16]),
        };
        assert_eq!(stamp_in(&stamp_out(&s)), Some(s));
        let mut bad = stamp_out(&s);
        bad.device.pop();
        assert_eq!(stamp_in(&bad), None);
    }

    #[test]
    fn field_stamps_equal_to_the_entry_are_left_out_and_inherited() {
        let s = Stamp {
            hlc: Hlc {
                wall_ms: 5,
                counter: 0,
            },
            device: DeviceId([1; 16]),
        };
        assert!(field_stamp_out(&s, Some(&s)).is_none());
        assert_eq!(field_stamp_in(None, Some(&s)), Some(s));
        assert_eq!(field_stamp_in(None, None), None);
    }
}
