//! Document `profile`: the account's display name and avatar.

use serde::Serialize;
use tidings_proto::v1 as pb;

use super::crdt::{Lww, record};
use super::wire::{stamp_out, top_stamp_in};

/// Where the avatar is and the key that decrypts it; they always change together.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Avatar {
    /// Download URL of the encrypted image.
    pub url: String,
    /// Key that decrypts it.
    pub key: Vec<u8>,
}

/// The profile as the app shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// Empty until set.
    pub display_name: String,
    /// `None` until set, or after removal.
    pub avatar: Option<Avatar>,
}

record! {
    /// The `profile` document's registers.
    pub struct ProfileDoc {
        /// The display name.
        pub display_name: Lww<String>,
        /// The avatar (`None`: removed).
        pub avatar: Lww<Option<Avatar>>,
    }
}

impl ProfileDoc {
    /// The profile as shown.
    pub fn read(&self) -> Profile {
        Profile {
            display_name: self
                .display_name
                .as_ref()
                .map(|r| r.value.clone())
                .unwrap_or_default(),
            avatar: self.avatar.as_ref().and_then(|r| r.value.clone()),
        }
    }

    /// On the wire; `None` when nothing was written.
    pub fn to_proto(&self) -> Option<pb::ConfigProfile> {
        if crate::config::crdt::Record::is_empty(self) {
            return None;
        }
        Some(pb::ConfigProfile {
            display_name: self.display_name.as_ref().map(|r| pb::StringRegister {
                stamp: Some(stamp_out(&r.stamp)),
                value: r.value.clone(),
            }),
            avatar: self.avatar.as_ref().map(|r| pb::AvatarRegister {
                stamp: Some(stamp_out(&r.stamp)),
                value: r.value.as_ref().map(|a| pb::Avatar {
                    url: a.url.clone(),
                    key: a.key.clone(),
                }),
            }),
        })
    }

    /// From the wire; registers with a bad stamp are ignored.
    pub fn from_proto(p: Option<&pb::ConfigProfile>) -> ProfileDoc {
        let Some(p) = p else { return ProfileDoc::default() };
        ProfileDoc {
            display_name: p
                .display_name
                .as_ref()
                .and_then(|r| Some(Lww::new(top_stamp_in(r.stamp.as_ref())?, r.value.clone()))),
            avatar: p.avatar.as_ref().and_then(|r| {
                let value = r.value.as_ref().map(|a| Avatar {
                    url: a.url.clone(),
                    key: a.key.clone(),
                });
                Some(Lww::new(top_stamp_in(r.stamp.as_ref())?, value))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::hlc::{DeviceId, Hlc, Stamp};
    use super::*;

    #[test]
    fn round_trips_through_the_wire() {
        let s = Stamp {
            hlc: Hlc {
                wall_ms: 10,
                counter: 1,
            },
            device: DeviceId([3; 16]),
        };
        let doc = ProfileDoc {
            display_name: Some(Lww::new(s, "Ada".into())),
            avatar: Some(Lww::new(
                s,
                Some(Avatar {
                    url: "https://x/a".into(),
                    key: vec![1, 2],
                }),
            )),
        };
        assert_eq!(ProfileDoc::from_proto(doc.to_proto().as_ref()), doc);
        assert_eq!(doc.read().display_name, "Ada");
        assert!(ProfileDoc::default().to_proto().is_none());
    }
}
