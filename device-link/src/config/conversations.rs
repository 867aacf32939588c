//! Document `conversations`: conversation id → last read, marked unread, pinned, priority.

use serde::Serialize;
use tidings_proto::v1 as pb;

use super::crdt::{Entry, EntryMap, Lww, MaxReg, MaxWrite, record};
use super::hlc::Stamp;
use super::wire::{existence_in, existence_out, field_stamp_in, field_stamp_out};

/// A conversation's state as the app shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Conversation {
    /// The app's conversation id (the map key).
    pub id: String,
    /// Every message sent at or before this Unix time in ms has been read.
    pub last_read_ms: u64,
    /// Shown as unread although read.
    pub marked_unread: bool,
    /// Pinned to the top.
    pub pinned: bool,
    /// Order among pinned conversations, greater first.
    pub priority: i32,
}

/// A partial change to a conversation: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationUpdate {
    /// Raise the read marker to this (never lowers it).
    pub last_read_ms: Option<u64>,
    /// New marked-unread flag.
    pub marked_unread: Option<bool>,
    /// New pinned flag.
    pub pinned: Option<bool>,
    /// New priority.
    pub priority: Option<i32>,
}

record! {
    /// The registers of one conversation.
    pub struct ConversationFields {
        /// Read marker; grow-only, so it survives a deletion and merges by maximum.
        pub last_read: MaxReg,
        /// Marked unread.
        pub marked_unread: Lww<bool>,
        /// Pinned.
        pub pinned: Lww<bool>,
        /// Priority.
        pub priority: Lww<i32>,
    }
}

/// The `conversations` document.
pub type ConversationsDoc = EntryMap<ConversationFields>;

/// The conversation at `id` as shown; `None` when it is deleted or not whole.
pub fn read(id: &str, e: &Entry<ConversationFields>) -> Option<Conversation> {
    if !e.is_visible() {
        return None;
    }
    let f = &e.fields;
    Some(Conversation {
        id: id.to_owned(),
        last_read_ms: f.last_read.as_ref()?.value(),
        marked_unread: f.marked_unread.as_ref()?.value,
        pinned: f.pinned.as_ref()?.value,
        priority: f.priority.as_ref()?.value,
    })
}

impl ConversationUpdate {
    fn apply_to(&self, c: &mut Conversation) {
        if let Some(v) = self.last_read_ms {
            c.last_read_ms = c.last_read_ms.max(v);
        }
        if let Some(v) = self.marked_unread {
            c.marked_unread = v;
        }
        if let Some(v) = self.pinned {
            c.pinned = v;
        }
        if let Some(v) = self.priority {
            c.priority = v;
        }
    }
}

/// Every register of `c`, and existence, at one stamp: a whole-record write.
pub fn whole(stamp: Stamp, c: &Conversation) -> Entry<ConversationFields> {
    Entry {
        exists: Some(Lww::new(stamp, true)),
        fields: ConversationFields {
            last_read: Some(MaxReg::new(stamp, c.last_read_ms)),
            marked_unread: Some(Lww::new(stamp, c.marked_unread)),
            pinned: Some(Lww::new(stamp, c.pinned)),
            priority: Some(Lww::new(stamp, c.priority)),
        },
    }
}

/// The registers `update` writes to the conversation shown as `current`: the changed
/// fields and existence, or a whole record when there is none. `None` when nothing changes.
///
/// `kept_read_ms` is the read marker a deleted conversation still holds. A re-created
/// record starts from it, so its marker register carries the new stamp: were the old,
/// greater marker to win the join with its old stamp, raising the floor past that stamp
/// would drop the register and leave the record incomplete, hidden everywhere.
pub fn update(
    id: &str,
    current: Option<Conversation>,
    kept_read_ms: Option<u64>,
    stamp: Stamp,
    update: &ConversationUpdate,
) -> Option<Entry<ConversationFields>> {
    let Some(cur) = current else {
        let mut c = Conversation {
            id: id.to_owned(),
            last_read_ms: kept_read_ms.unwrap_or(0),
            ..Conversation::default()
        };
        update.apply_to(&mut c);
        return Some(whole(stamp, &c));
    };
    let mut next = cur.clone();
    update.apply_to(&mut next);
    if next == cur {
        return None;
    }
    let fields = ConversationFields {
        last_read: (next.last_read_ms != cur.last_read_ms).then(|| MaxReg::new(stamp, next.last_read_ms)),
        marked_unread: (next.marked_unread != cur.marked_unread).then(|| Lww::new(stamp, next.marked_unread)),
        pinned: (next.pinned != cur.pinned).then(|| Lww::new(stamp, next.pinned)),
        priority: (next.priority != cur.priority).then(|| Lww::new(stamp, next.priority)),
    };
    Some(Entry {
        exists: Some(Lww::new(stamp, true)),
        fields,
    })
}

/// One conversation on the wire.
pub fn entry_out(id: &str, e: &Entry<ConversationFields>) -> pb::ConversationEntry {
    let es = e.exists.as_ref().map(|x| x.stamp);
    let es = es.as_ref();
    let f = &e.fields;
    pb::ConversationEntry {
        id: id.to_owned(),
        existence: e.exists.as_ref().map(existence_out),
        last_read_ms: f.last_read.as_ref().map_or_else(Vec::new, |r| {
            r.writes()
                .iter()
                .map(|w| pb::MaxRegister {
                    stamp: field_stamp_out(&w.stamp, es),
                    value: w.value,
                })
                .collect()
        }),
        marked_unread: f.marked_unread.as_ref().map(|r| pb::BoolRegister {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value,
        }),
        pinned: f.pinned.as_ref().map(|r| pb::BoolRegister {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value,
        }),
        priority: f.priority.as_ref().map(|r| pb::Int32Register {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value,
        }),
    }
}

/// One conversation from the wire; registers without a usable stamp are ignored.
pub fn entry_in(p: &pb::ConversationEntry) -> Entry<ConversationFields> {
    let exists = existence_in(p.existence.as_ref());
    let es = exists.as_ref().map(|x| x.stamp);
    let es = es.as_ref();
    let reg = |stamp: Option<&pb::HlcStamp>| field_stamp_in(stamp, es);
    Entry {
        fields: ConversationFields {
            last_read: MaxReg::from_writes(p.last_read_ms.iter().filter_map(|r| {
                Some(MaxWrite {
                    stamp: reg(r.stamp.as_ref())?,
                    value: r.value,
                })
            })),
            marked_unread: p
                .marked_unread
                .as_ref()
                .and_then(|r| Some(Lww::new(reg(r.stamp.as_ref())?, r.value))),
            pinned: p
                .pinned
                .as_ref()
                .and_then(|r| Some(Lww::new(reg(r.stamp.as_ref())?, r.value))),
            priority: p
                .priority
                .as_ref()
                .and_then(|r| Some(Lww::new(reg(r.stamp.as_ref())?, r.value))),
        },
        exists,
    }
}

#[cfg(test)]
mod tests {
    use super::super::hlc::{DeviceId, Hlc};
    use super::*;

    fn st(wall_ms: u64) -> Stamp {
        Stamp {
            hlc: Hlc { wall_ms, counter: 0 },
            device: DeviceId([2; 16]),
        }
    }

    #[test]
    fn the_read_marker_never_goes_back() {
        let cur = Conversation {
            id: "c".into(),
            last_read_ms: 500,
            ..Conversation::default()
        };
        let u = ConversationUpdate {
            last_read_ms: Some(100),
            ..Default::default()
        };
        assert!(update("c", Some(cur.clone()), None, st(1), &u).is_none());
        let u = ConversationUpdate {
            last_read_ms: Some(900),
            ..Default::default()
        };
        let e = update("c", Some(cur), None, st(1), &u).expect("raised");
        assert_eq!(e.fields.last_read.map(|r| r.value()), Some(900));
    }

    #[test]
    fn round_trips_through_the_wire() {
        let mut e = whole(
            st(3),
            &Conversation {
                id: "c".into(),
                pinned: true,
                priority: -4,
                ..Default::default()
            },
        );
        e.fields.last_read = MaxReg::from_writes([
            MaxWrite {
                stamp: st(7),
                value: 1234,
            },
            MaxWrite {
                stamp: st(9),
                value: 1000,
            },
        ]);
        assert_eq!(entry_in(&entry_out("c", &e)), e);
        assert_eq!(read("c", &e).map(|c| c.last_read_ms), Some(1234));
    }
}
