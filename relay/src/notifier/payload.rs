//! Building the encrypted payload of one push and handing it to the right sender.

use tidings_proto::{
    hash::h,
    push::{enc_len, encrypt_push},
    v1::PushNotification,
};

use super::{
    breaker::{Admission, Ticket},
    is_apns,
    providers::Providers,
};
use crate::{
    push::{ApnsKind, ApnsPush, FCM_MAX_ENC_LEN, FcmPush, Outcome, apns_max_enc_len},
    registration::{Registration, Service},
    store::{PushJob, StoredMessage},
};

/// FCM keeps a message at most 28 days.
const FCM_MAX_TTL_S: u64 = 28 * 24 * 3600;

/// The placeholder an alert push shows when the app's extension cannot decrypt it.
#[derive(Debug, Clone)]
pub struct PushTexts {
    /// Alert title.
    pub title: String,
    /// Alert body.
    pub body: String,
}

impl Default for PushTexts {
    fn default() -> Self {
        Self {
            title: String::new(),
            body: "New message".into(),
        }
    }
}

/// Sends one push through its (app, provider)'s circuit breaker: while the breaker is
/// open (or the provider has its share of calls in flight) the push is deferred as a
/// retry without calling out; otherwise the call is bounded in time and its outcome
/// recorded.
pub(super) async fn send(
    providers: &Providers,
    reg: &Registration,
    job: &PushJob,
    msg: &StoredMessage,
    want_data: bool,
    texts: &PushTexts,
    now_ms: i64,
) -> Outcome {
    let breakers = providers.breakers();
    let ticket = match breakers.admit(&reg.app_id, reg.service) {
        Admission::Go(ticket) => ticket,
        Admission::Defer { after, reason } => return Outcome::Retry { after, reason },
    };
    let limit = breakers.settings().call_limit;
    let call = send_now(providers, reg, job, msg, want_data, texts, now_ms);
    let outcome = tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Outcome::Retry {
            after: None,
            reason: format!("{} call took longer than {limit:?}", reg.service.label()),
        });
    Ticket::finish(ticket, &outcome);
    outcome
}

/// Encrypts and sends one push; a missing sender is a configuration problem.
async fn send_now(
    providers: &Providers,
    reg: &Registration,
    job: &PushJob,
    msg: &StoredMessage,
    want_data: bool,
    texts: &PushTexts,
    now_ms: i64,
) -> Outcome {
    let app = providers.app(&reg.app_id);
    let message_ns =
        !tidings_proto::namespace::is_owner_only(i32::try_from(job.namespace).unwrap_or(i32::MAX));
    let collapse = collapse_id(&reg.push_key, &job.hash);
    if is_apns(reg.service) {
        let Some(sender) = app.and_then(|a| a.apns.as_ref()) else {
            return missing(reg);
        };
        let kind = if message_ns {
            ApnsKind::Alert {
                title: texts.title.clone(),
                body: texts.body.clone(),
            }
        } else {
            ApnsKind::Background
        };
        let enc = encrypt(reg, job, msg, want_data, apns_max_enc_len(&kind));
        let push = ApnsPush {
            token: reg.token.clone(),
            sandbox: reg.service == Service::ApnsSandbox,
            kind,
            enc,
            expiration: u64::try_from(msg.expires_ms / 1000).unwrap_or(0),
            collapse_id: Some(collapse),
        };
        sender.send(&push).await
    } else {
        let Some(sender) = app.and_then(|a| a.fcm.as_ref()) else {
            return missing(reg);
        };
        let ttl_ms = u64::try_from(msg.expires_ms.saturating_sub(now_ms)).unwrap_or(0);
        let push = FcmPush {
            token: reg.token.clone(),
            enc: encrypt(reg, job, msg, want_data, FCM_MAX_ENC_LEN),
            high_priority: message_ns,
            ttl_s: (ttl_ms / 1000).min(FCM_MAX_TTL_S),
            collapse_key: Some(collapse),
        };
        sender.send(&push).await
    }
}

fn missing(reg: &Registration) -> Outcome {
    Outcome::ConfigError {
        reason: format!(
            "app {:?} is no longer configured for {}",
            reg.app_id,
            reg.service.label()
        ),
    }
}

/// The notification, with `data` only when the device wants it and it fits `max_enc`.
fn encrypt(
    reg: &Registration,
    job: &PushJob,
    msg: &StoredMessage,
    want_data: bool,
    max_enc: usize,
) -> String {
    let mut note = PushNotification {
        account: job.account.to_vec(),
        namespace: i32::try_from(job.namespace).unwrap_or(i32::MAX),
        hash: job.hash.to_vec(),
        seq: job.seq,
        created_ms: msg.created_ms,
        expires_ms: msg.expires_ms,
        data_len: u32::try_from(msg.data.len()).unwrap_or(u32::MAX),
        data: Vec::new(),
        data_omitted: true,
    };
    if want_data {
        note.data = msg.data.clone();
        note.data_omitted = false;
        if enc_len(prost::Message::encoded_len(&note)) > max_enc {
            note.data = Vec::new();
            note.data_omitted = true;
        }
    }
    encrypt_push(&reg.push_key, &note)
}

/// A per-device collapse id: repeats of one message replace each other, but Apple and
/// Google cannot link the id to the message hash or across devices.
fn collapse_id(push_key: &[u8; 32], hash: &[u8; 32]) -> String {
    hex::encode(&h(&[b"tidings/collapse/v1", push_key, hash])[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_proto::push::decrypt_push;

    fn fixture(data_len: usize) -> (Registration, PushJob, StoredMessage) {
        let reg = Registration {
            service: Service::Fcm,
            token: "t".into(),
            app_id: "a".into(),
            push_key: [7; 32],
            device_id: [1; 16],
        };
        let job = PushJob {
            id: 1,
            account: [2; 32],
            account_index: [3; 32],
            device_id: [1; 16],
            namespace: 0,
            hash: [4; 32],
            seq: 5,
            created_ms: 10,
            expires_ms: 20,
            attempts: 0,
            enqueued_ms: 10,
            lease: Default::default(),
        };
        let msg = StoredMessage {
            hash: [4; 32],
            seq: 5,
            data: vec![9; data_len],
            created_ms: 10,
            expires_ms: 20,
        };
        (reg, job, msg)
    }

    #[test]
    fn data_is_included_only_when_wanted_and_fitting() {
        let (reg, job, msg) = fixture(100);
        let with = decrypt_push(&reg.push_key, &encrypt(&reg, &job, &msg, true, FCM_MAX_ENC_LEN)).unwrap();
        assert_eq!(
            (with.data.len(), with.data_omitted, with.data_len),
            (100, false, 100)
        );
        let without =
            decrypt_push(&reg.push_key, &encrypt(&reg, &job, &msg, false, FCM_MAX_ENC_LEN)).unwrap();
        assert_eq!((without.data.len(), without.data_omitted), (0, true));
        let (reg, job, big) = fixture(5000);
        let enc = encrypt(&reg, &job, &big, true, FCM_MAX_ENC_LEN);
        assert!(enc.len() <= FCM_MAX_ENC_LEN);
        let n = decrypt_push(&reg.push_key, &enc).unwrap();
        assert_eq!(
            (n.data.len(), n.data_omitted, n.data_len, n.seq),
            (0, true, 5000, 5)
        );
    }

    #[test]
    fn collapse_ids_differ_per_device() {
        assert_ne!(collapse_id(&[1; 32], &[0; 32]), collapse_id(&[2; 32], &[0; 32]));
        assert_eq!(collapse_id(&[1; 32], &[0; 32]).len(), 32);
    }
}
