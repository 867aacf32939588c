//! Document `contacts`: account id → name, nickname, approved, blocked, muted until.

use serde::Serialize;
use tidings_proto::v1 as pb;

use super::crdt::{Entry, EntryMap, Lww, record};
use super::hlc::Stamp;
use super::wire::{existence_in, existence_out, field_stamp_in, field_stamp_out};

/// A contact as the app shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Contact {
    /// The contact's account id (the map key).
    pub account_id: String,
    /// The name the contact chose.
    pub name: String,
    /// The name the owner gave the contact.
    pub nickname: Option<String>,
    /// Message requests from this contact are accepted.
    pub approved: bool,
    /// Messages from this contact are dropped.
    pub blocked: bool,
    /// Notifications are silent until this Unix time in ms.
    pub muted_until: Option<u64>,
}

/// A partial change to a contact: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactUpdate {
    /// New name.
    pub name: Option<String>,
    /// New nickname (`Some(None)` clears it).
    pub nickname: Option<Option<String>>,
    /// New approval.
    pub approved: Option<bool>,
    /// New blocked flag.
    pub blocked: Option<bool>,
    /// New mute end (`Some(None)` unmutes).
    pub muted_until: Option<Option<u64>>,
}

record! {
    /// The registers of one contact.
    pub struct ContactFields {
        /// Name.
        pub name: Lww<String>,
        /// Nickname.
        pub nickname: Lww<Option<String>>,
        /// Approved.
        pub approved: Lww<bool>,
        /// Blocked.
        pub blocked: Lww<bool>,
        /// Muted until (Unix ms; 0: not muted).
        pub muted_until: Lww<u64>,
    }
}

/// The `contacts` document.
pub type ContactsDoc = EntryMap<ContactFields>;

/// The contact at `account_id` as shown; `None` when it is deleted or not whole.
pub fn read(account_id: &str, e: &Entry<ContactFields>) -> Option<Contact> {
    if !e.is_visible() {
        return None;
    }
    let f = &e.fields;
    Some(Contact {
        account_id: account_id.to_owned(),
        name: f.name.as_ref()?.value.clone(),
        nickname: f.nickname.as_ref()?.value.clone(),
        approved: f.approved.as_ref()?.value,
        blocked: f.blocked.as_ref()?.value,
        muted_until: Some(f.muted_until.as_ref()?.value).filter(|&t| t != 0),
    })
}

impl ContactUpdate {
    fn apply_to(&self, c: &mut Contact) {
        if let Some(v) = &self.name {
            c.name.clone_from(v);
        }
        if let Some(v) = &self.nickname {
            c.nickname.clone_from(v);
        }
        if let Some(v) = self.approved {
            c.approved = v;
        }
        if let Some(v) = self.blocked {
            c.blocked = v;
        }
        if let Some(v) = self.muted_until {
            c.muted_until = v;
        }
    }
}

/// Every register of `c`, and existence, at one stamp: a whole-record write.
pub fn whole(stamp: Stamp, c: &Contact) -> Entry<ContactFields> {
    Entry {
        exists: Some(Lww::new(stamp, true)),
        fields: ContactFields {
            name: Some(Lww::new(stamp, c.name.clone())),
            nickname: Some(Lww::new(stamp, c.nickname.clone())),
            approved: Some(Lww::new(stamp, c.approved)),
            blocked: Some(Lww::new(stamp, c.blocked)),
            muted_until: Some(Lww::new(stamp, c.muted_until.unwrap_or(0))),
        },
    }
}

/// The registers `update` writes to the contact shown as `current`: the changed fields
/// and existence, or a whole record (defaults plus the update) when there is no contact
/// and `create` allows it. `None` when nothing would change.
pub fn update(
    account_id: &str,
    current: Option<Contact>,
    stamp: Stamp,
    update: &ContactUpdate,
    create: bool,
) -> Option<Entry<ContactFields>> {
    let Some(cur) = current else {
        if !create {
            return None;
        }
        let mut c = Contact {
            account_id: account_id.to_owned(),
            ..Contact::default()
        };
        update.apply_to(&mut c);
        return Some(whole(stamp, &c));
    };
    let mut next = cur.clone();
    update.apply_to(&mut next);
    if next == cur {
        return None;
    }
    let changed = |differs: bool| differs.then_some(());
    let fields = ContactFields {
        name: changed(next.name != cur.name).map(|()| Lww::new(stamp, next.name.clone())),
        nickname: changed(next.nickname != cur.nickname).map(|()| Lww::new(stamp, next.nickname.clone())),
        approved: changed(next.approved != cur.approved).map(|()| Lww::new(stamp, next.approved)),
        blocked: changed(next.blocked != cur.blocked).map(|()| Lww::new(stamp, next.blocked)),
        muted_until: changed(next.muted_until != cur.muted_until)
            .map(|()| Lww::new(stamp, next.muted_until.unwrap_or(0))),
    };
    Some(Entry {
        exists: Some(Lww::new(stamp, true)),
        fields,
    })
}

/// One contact on the wire.
pub fn entry_out(account_id: &str, e: &Entry<ContactFields>) -> pb::ContactEntry {
    let es = e.exists.as_ref().map(|x| x.stamp);
    let es = es.as_ref();
    let f = &e.fields;
    pb::ContactEntry {
        account_id: account_id.to_owned(),
        existence: e.exists.as_ref().map(existence_out),
        name: f.name.as_ref().map(|r| pb::StringRegister {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value.clone(),
        }),
        nickname: f.nickname.as_ref().map(|r| pb::OptionalStringRegister {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value.clone(),
        }),
        approved: f.approved.as_ref().map(|r| pb::BoolRegister {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value,
        }),
        blocked: f.blocked.as_ref().map(|r| pb::BoolRegister {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value,
        }),
        muted_until_ms: f.muted_until.as_ref().map(|r| pb::UInt64Register {
            stamp: field_stamp_out(&r.stamp, es),
            value: r.value,
        }),
    }
}

/// One contact from the wire; registers without a usable stamp are ignored.
pub fn entry_in(p: &pb::ContactEntry) -> Entry<ContactFields> {
    let exists = existence_in(p.existence.as_ref());
    let es = exists.as_ref().map(|x| x.stamp);
    let es = es.as_ref();
    let reg = |stamp: Option<&pb::HlcStamp>| field_stamp_in(stamp, es);
    Entry {
        fields: ContactFields {
            name: p
                .name
                .as_ref()
                .and_then(|r| Some(Lww::new(reg(r.stamp.as_ref())?, r.value.clone()))),
            nickname: p
                .nickname
                .as_ref()
                .and_then(|r| Some(Lww::new(reg(r.stamp.as_ref())?, r.value.clone()))),
            approved: p
                .approved
                .as_ref()
                .and_then(|r| Some(Lww::new(reg(r.stamp.as_ref())?, r.value))),
            blocked: p
                .blocked
                .as_ref()
                .and_then(|r| Some(Lww::new(reg(r.stamp.as_ref())?, r.value))),
            muted_until: p
                .muted_until_ms
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
            device: DeviceId([1; 16]),
        }
    }

    fn ada() -> Contact {
        Contact {
            account_id: "01aa".into(),
            name: "Ada".into(),
            approved: true,
            ..Contact::default()
        }
    }

    #[test]
    fn an_update_of_a_shown_contact_writes_only_what_changed() {
        let u = ContactUpdate {
            nickname: Some(Some("A".into())),
            approved: Some(true),
            ..Default::default()
        };
        let e = update("01aa", Some(ada()), st(2), &u, true).expect("nickname changed");
        assert!(e.fields.nickname.is_some() && e.fields.approved.is_none() && e.fields.name.is_none());
        assert_eq!(e.exists, Some(Lww::new(st(2), true)));
        let same = ContactUpdate {
            approved: Some(true),
            ..Default::default()
        };
        assert!(update("01aa", Some(ada()), st(3), &same, true).is_none());
    }

    #[test]
    fn an_update_of_a_missing_contact_writes_a_whole_record_or_nothing() {
        let u = ContactUpdate {
            blocked: Some(true),
            ..Default::default()
        };
        let e = update("01bb", None, st(2), &u, true).expect("created");
        let c = read("01bb", &e).expect("whole");
        assert!(c.blocked && c.name.is_empty());
        assert!(update("01bb", None, st(2), &u, false).is_none());
    }

    #[test]
    fn round_trips_through_the_wire_with_shared_stamps_left_out() {
        let mut e = whole(
            st(5),
            &Contact {
                muted_until: Some(99),
                nickname: Some("n".into()),
                ..ada()
            },
        );
        e.fields.name = Some(Lww::new(st(6), "Ada L".into()));
        let p = entry_out("01aa", &e);
        assert!(p.approved.as_ref().is_some_and(|r| r.stamp.is_none()));
        assert!(p.name.as_ref().is_some_and(|r| r.stamp.is_some()));
        assert_eq!(entry_in(&p), e);
    }
}
