//! Document `settings`: notification mode and what notifications may show.

use serde::Serialize;
use tidings_proto::v1 as pb;

use super::crdt::{Lww, record};
use super::wire::{stamp_out, top_stamp_in};

/// How the account's devices receive messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum NotificationMode {
    /// Encrypted pushes through APNs / FCM.
    Fast,
    /// Polling only (the default: it needs no push registration).
    #[default]
    Slow,
}

impl NotificationMode {
    fn to_wire(self) -> i32 {
        match self {
            NotificationMode::Fast => pb::NotificationMode::Fast as i32,
            NotificationMode::Slow => pb::NotificationMode::Slow as i32,
        }
    }

    /// Unknown values (from a newer implementation) read as the default.
    fn from_wire(v: i32) -> NotificationMode {
        match pb::NotificationMode::try_from(v) {
            Ok(pb::NotificationMode::Fast) => NotificationMode::Fast,
            _ => NotificationMode::Slow,
        }
    }
}

/// What a notification may show; both options change together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Previews {
    /// The sender's name.
    pub show_sender: bool,
    /// The message text.
    pub show_content: bool,
}

impl Default for Previews {
    /// Sender yes, content no: a locked screen should not show what was written.
    fn default() -> Previews {
        Previews {
            show_sender: true,
            show_content: false,
        }
    }
}

/// The settings as the app uses them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// Fast or Slow Mode.
    pub notification_mode: NotificationMode,
    /// Notification previews.
    pub previews: Previews,
}

record! {
    /// The `settings` document's registers.
    pub struct SettingsDoc {
        /// The raw `tidings.v1.NotificationMode` value, kept even when unknown so that a
        /// newer implementation's choice survives a merge here.
        pub notification_mode: Lww<i32>,
        /// Preview options.
        pub previews: Lww<Previews>,
    }
}

impl SettingsDoc {
    /// The settings as used.
    pub fn read(&self) -> Settings {
        Settings {
            notification_mode: self
                .notification_mode
                .as_ref()
                .map(|r| NotificationMode::from_wire(r.value))
                .unwrap_or_default(),
            previews: self.previews.as_ref().map(|r| r.value).unwrap_or_default(),
        }
    }

    /// The register value for `mode`.
    pub fn mode_value(mode: NotificationMode) -> i32 {
        mode.to_wire()
    }

    /// On the wire; `None` when nothing was written.
    pub fn to_proto(&self) -> Option<pb::ConfigSettings> {
        if crate::config::crdt::Record::is_empty(self) {
            return None;
        }
        Some(pb::ConfigSettings {
            notification_mode: self
                .notification_mode
                .as_ref()
                .map(|r| pb::NotificationModeRegister {
                    stamp: Some(stamp_out(&r.stamp)),
                    value: r.value,
                }),
            previews: self.previews.as_ref().map(|r| pb::PreviewsRegister {
                stamp: Some(stamp_out(&r.stamp)),
                value: Some(pb::Previews {
                    show_sender: r.value.show_sender,
                    show_content: r.value.show_content,
                }),
            }),
        })
    }

    /// From the wire; registers with a bad stamp are ignored.
    pub fn from_proto(p: Option<&pb::ConfigSettings>) -> SettingsDoc {
        let Some(p) = p else { return SettingsDoc::default() };
        SettingsDoc {
            notification_mode: p
                .notification_mode
                .as_ref()
                .and_then(|r| Some(Lww::new(top_stamp_in(r.stamp.as_ref())?, r.value))),
            previews: p.previews.as_ref().and_then(|r| {
                let v = r.value.unwrap_or_default();
                let value = Previews {
                    show_sender: v.show_sender,
                    show_content: v.show_content,
                };
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
    fn round_trips_and_unknown_modes_survive_but_read_as_default() {
        let s = Stamp {
            hlc: Hlc {
                wall_ms: 10,
                counter: 0,
            },
            device: DeviceId([3; 16]),
        };
        let doc = SettingsDoc {
            notification_mode: Some(Lww::new(s, 77)),
            previews: Some(Lww::new(
                s,
                Previews {
                    show_sender: false,
                    show_content: true,
                },
            )),
        };
        let back = SettingsDoc::from_proto(doc.to_proto().as_ref());
        assert_eq!(back, doc);
        assert_eq!(back.read().notification_mode, NotificationMode::Slow);
        assert_eq!(SettingsDoc::default().read(), Settings::default());
    }

    #[test]
    fn modes_map_to_the_wire_enum() {
        for m in [NotificationMode::Fast, NotificationMode::Slow] {
            assert_eq!(NotificationMode::from_wire(m.to_wire()), m);
        }
    }
}
