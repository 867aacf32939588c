//! Hybrid logical clock: stamps that follow the wall clock but never go backwards and
//! always come after every stamp already seen, so a later edit beats what it saw.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A hybrid logical clock reading: physical milliseconds plus a counter that orders
/// readings within the same millisecond. Ordered by `(wall_ms, counter)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (or later, after seeing a clock that runs ahead).
    pub wall_ms: u64,
    /// Orders readings that share `wall_ms`.
    pub counter: u32,
}

impl Hlc {
    /// The smallest reading greater than `self`.
    pub fn successor(self) -> Hlc {
        match self.counter.checked_add(1) {
            Some(counter) => Hlc {
                wall_ms: self.wall_ms,
                counter,
            },
            None => Hlc {
                wall_ms: self.wall_ms.saturating_add(1),
                counter: 0,
            },
        }
    }
}

/// The 16-byte random id of one install; breaks ties between equal clock readings.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 16]);

impl DeviceId {
    /// A fresh random device id.
    pub fn random() -> DeviceId {
        DeviceId(tidings_proto::random_bytes())
    }

    /// Parses a 16-byte slice; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<DeviceId> {
        bytes.try_into().ok().map(DeviceId)
    }
}

impl fmt::Debug for DeviceId {
    // A device id is no secret, but a short prefix keeps logs readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", hex::encode(&self.0[..4]))
    }
}

/// A write's position in the total order of all writes: clock reading, then device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// When the write happened (hybrid logical clock).
    pub hlc: Hlc,
    /// Who wrote it.
    pub device: DeviceId,
}

impl Stamp {
    /// The wall-clock part, which floors and device marks compare against.
    pub fn wall_ms(&self) -> u64 {
        self.hlc.wall_ms
    }
}

/// A device's hybrid logical clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that has issued nothing yet.
    pub fn new() -> HlcClock {
        HlcClock::default()
    }

    /// A clock resuming after `last`, the greatest reading it issued or saw before a restart.
    pub fn resume(last: Hlc) -> HlcClock {
        HlcClock { last }
    }

    /// The greatest reading issued or observed so far.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new reading from the system clock, greater than every earlier one.
    pub fn now(&mut self) -> Hlc {
        self.now_at(system_ms())
    }

    /// A new reading for physical time `physical_ms`, greater than every earlier one even
    /// when the physical clock went backwards.
    pub fn now_at(&mut self, physical_ms: u64) -> Hlc {
        let next = if physical_ms > self.last.wall_ms {
            Hlc {
                wall_ms: physical_ms,
                counter: 0,
            }
        } else {
            self.last.successor()
        };
        self.last = next;
        next
    }

    /// Takes note of a reading from another device, so the next reading comes after it.
    pub fn observe(&mut self, remote: Hlc) {
        if remote > self.last {
            self.last = remote;
        }
    }
}

/// The system clock in Unix milliseconds (0 before 1970, which only a broken clock reports).
pub fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_the_physical_clock_when_it_moves_forward() {
        let mut c = HlcClock::new();
        assert_eq!(
            c.now_at(100),
            Hlc {
                wall_ms: 100,
                counter: 0
            }
        );
        assert_eq!(
            c.now_at(200),
            Hlc {
                wall_ms: 200,
                counter: 0
            }
        );
    }

    #[test]
    fn counts_within_a_millisecond_and_when_the_clock_goes_back() {
        let mut c = HlcClock::new();
        c.now_at(100);
        assert_eq!(
            c.now_at(100),
            Hlc {
                wall_ms: 100,
                counter: 1
            }
        );
        assert_eq!(
            c.now_at(50),
            Hlc {
                wall_ms: 100,
                counter: 2
            }
        );
    }

    #[test]
    fn observing_a_clock_ahead_moves_past_it() {
        let mut c = HlcClock::new();
        c.now_at(100);
        c.observe(Hlc {
            wall_ms: 5_000,
            counter: 7,
        });
        assert_eq!(
            c.now_at(101),
            Hlc {
                wall_ms: 5_000,
                counter: 8
            }
        );
        c.observe(Hlc {
            wall_ms: 10,
            counter: 0,
        });
        assert_eq!(
            c.last(),
            Hlc {
                wall_ms: 5_000,
                counter: 8
            }
        );
    }

    #[test]
    fn counter_overflow_carries_into_the_wall_clock() {
        let h = Hlc {
            wall_ms: 9,
            counter: u32::MAX,
        };
        assert_eq!(
            h.successor(),
            Hlc {
                wall_ms: 10,
                counter: 0
            }
        );
    }

    #[test]
    fn stamps_order_by_clock_then_device() {
        let a = Stamp {
            hlc: Hlc {
                wall_ms: 1,
                counter: 0,
            },
            device: DeviceId([9; 16]),
        };
        let b = Stamp {
            hlc: Hlc {
                wall_ms: 1,
                counter: 1,
            },
            device: DeviceId([0; 16]),
        };
        let c = Stamp {
            hlc: Hlc {
                wall_ms: 1,
                counter: 1,
            },
            device: DeviceId([1; 16]),
        };
        assert!(a < b && b < c);
    }

    proptest! {
        #[test]
        fn readings_strictly_increase_whatever_the_physical_clock_and_remotes_do(
            steps in proptest::collection::vec((0u64..1_000, proptest::option::of((0u64..2_000, 0u32..5))), 1..200)
        ) {
            let mut c = HlcClock::new();
            let mut issued: Option<Hlc> = None;
            for (physical, remote) in steps {
                if let Some((wall_ms, counter)) = remote {
                    c.observe(Hlc { wall_ms, counter });
                }
                let before = c.last();
                let h = c.now_at(physical);
                prop_assert!(h > before);
                if let Some(prev) = issued {
                    prop_assert!(h > prev);
                }
                prop_assert!(h.wall_ms >= physical);
                issued = Some(h);
            }
        }
    }
}
