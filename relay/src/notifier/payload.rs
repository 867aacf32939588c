//! Building the encrypted payload of one push and handing it to the right sender.

use tidings_proto::{
    hash::h,
    push::{enc_len, encrypt_push},
    v1::PushNotification,
};

use super::{
    breaker::{Admission, Ticket},
    providers::{AppProviders, Providers},
};
use crate::{
    push::{
        ApnsKind, ApnsPush, Delivery, FCM_MAX_ENC_LEN, FcmPush, HMS_MAX_ENC_LEN, HmsPush, Outcome, Urgency,
        WEBPUSH_MAX_ENC_LEN, WebPushPush, apns_max_enc_len,
    },
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
    let ticket = match breakers.admit(&breaker_key(reg), reg.service) {
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

/// Which breaker a push goes through: the app's, and for Web Push also the endpoint's
/// host (clients choose it: one failing distributor must not hold up the others). The host
/// is hashed, since breaker keys reach the log.
fn breaker_key(reg: &Registration) -> String {
    let host = reg
        .web_push
        .as_ref()
        .and_then(|w| reqwest::Url::parse(&w.endpoint).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    match host {
        Some(host) => format!(
            "{} (endpoint host {})",
            reg.app_id,
            hex::encode(&h(&[b"tidings/breaker-host/v1", host.as_bytes()])[..4])
        ),
        None => reg.app_id.clone(),
    }
}

/// What one push is about, whichever provider carries it.
struct Note<'a> {
    reg: &'a Registration,
    job: &'a PushJob,
    msg: &'a StoredMessage,
    want_data: bool,
    /// A message namespace (alert, high priority), not a config one.
    message_ns: bool,
    collapse: String,
    ttl_s: u64,
}

impl Note<'_> {
    fn enc(&self, max_enc: usize) -> String {
        encrypt(self.reg, self.job, self.msg, self.want_data, max_enc)
    }

    /// The notification again without its data, after the provider refused the size.
    fn enc_without_data(&self, max_enc: usize) -> String {
        encrypt(self.reg, self.job, self.msg, false, max_enc)
    }
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
    let ttl_ms = u64::try_from(msg.expires_ms.saturating_sub(now_ms)).unwrap_or(0);
    let note = Note {
        reg,
        job,
        msg,
        want_data,
        message_ns: !tidings_proto::namespace::is_owner_only(
            i32::try_from(job.namespace).unwrap_or(i32::MAX),
        ),
        collapse: collapse_id(reg.push_key.as_bytes(), &job.hash),
        ttl_s: ttl_ms / 1000,
    };
    match reg.service {
        Service::Apns | Service::ApnsSandbox => send_apns(app, &note, texts).await,
        Service::Fcm => send_fcm(app, &note).await,
        Service::WebPush => send_webpush(app, &note).await,
        Service::Hms => send_hms(app, &note).await,
    }
}

async fn send_apns(app: Option<&AppProviders>, note: &Note<'_>, texts: &PushTexts) -> Outcome {
    let Some(sender) = app.and_then(|a| a.apns.as_ref()) else {
        return missing(note.reg);
    };
    let kind = if note.message_ns {
        ApnsKind::Alert {
            title: texts.title.clone(),
            body: texts.body.clone(),
        }
    } else {
        ApnsKind::Background
    };
    let enc = note.enc(apns_max_enc_len(&kind));
    let push = ApnsPush {
        token: note.reg.token.clone(),
        sandbox: note.reg.service == Service::ApnsSandbox,
        kind,
        enc,
        expiration: u64::try_from(note.msg.expires_ms / 1000).unwrap_or(0),
        collapse_id: Some(note.collapse.clone()),
    };
    sender.send(&push).await
}

async fn send_fcm(app: Option<&AppProviders>, note: &Note<'_>) -> Outcome {
    let Some(sender) = app.and_then(|a| a.fcm.as_ref()) else {
        return missing(note.reg);
    };
    let push = FcmPush {
        token: note.reg.token.clone(),
        enc: note.enc(FCM_MAX_ENC_LEN),
        high_priority: note.message_ns,
        ttl_s: note.ttl_s.min(FCM_MAX_TTL_S),
        collapse_key: Some(note.collapse.clone()),
    };
    sender.send(&push).await
}

/// Web Push; a 413 is answered by sending the notification again without its data.
async fn send_webpush(app: Option<&AppProviders>, note: &Note<'_>) -> Outcome {
    let (Some(sender), Some(target)) = (app.and_then(|a| a.webpush.as_ref()), note.reg.web_push.as_ref())
    else {
        return missing(note.reg);
    };
    let mut push = WebPushPush {
        target: target.clone(),
        payload: note.enc(WEBPUSH_MAX_ENC_LEN).into_bytes(),
        urgency: if note.message_ns {
            Urgency::High
        } else {
            Urgency::Normal
        },
        ttl_s: note.ttl_s,
        topic: Some(note.collapse.clone()),
    };
    match sender.send(&push).await {
        Delivery::Done(outcome) => outcome,
        Delivery::TooLarge { reason } if note.want_data => {
            tracing::debug!(
                job = note.job.id,
                "web push too large ({reason}); sending without data"
            );
            push.payload = note.enc_without_data(WEBPUSH_MAX_ENC_LEN).into_bytes();
            too_large_again(sender.send(&push).await)
        }
        Delivery::TooLarge { reason } => Outcome::Failed { reason },
    }
}

/// Push Kit; a size refusal is answered by sending the notification again without data.
async fn send_hms(app: Option<&AppProviders>, note: &Note<'_>) -> Outcome {
    let Some(sender) = app.and_then(|a| a.hms.as_ref()) else {
        return missing(note.reg);
    };
    let mut push = HmsPush {
        token: note.reg.token.clone(),
        enc: note.enc(HMS_MAX_ENC_LEN),
        high_priority: note.message_ns,
        ttl_s: note.ttl_s,
    };
    match sender.send(&push).await {
        Delivery::Done(outcome) => outcome,
        Delivery::TooLarge { reason } if note.want_data => {
            tracing::debug!(
                job = note.job.id,
                "HMS push too large ({reason}); sending without data"
            );
            push.enc = note.enc_without_data(HMS_MAX_ENC_LEN);
            too_large_again(sender.send(&push).await)
        }
        Delivery::TooLarge { reason } => Outcome::Failed { reason },
    }
}

/// A notification without data is a few hundred bytes: refused again, it is dropped.
fn too_large_again(delivery: Delivery) -> Outcome {
    match delivery {
        Delivery::Done(outcome) => outcome,
        Delivery::TooLarge { reason } => Outcome::Failed {
            reason: format!("refused even without data: {reason}"),
        },
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
// A stage boundary of `tidings-bench push-profile`, which finds stages by symbol name.
#[inline(never)]
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
    encrypt_push(reg.push_key.as_bytes(), &note)
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
            push_key: [7; 32].into(),
            device_id: [1; 16],
            web_push: None,
        };
        let job = PushJob {
            id: 1,
            account: crate::store::Account([2; 32]),
            account_index: crate::store::AccountIndex([3; 32]),
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
        let with = decrypt_push(
            reg.push_key.as_bytes(),
            &encrypt(&reg, &job, &msg, true, FCM_MAX_ENC_LEN),
        )
        .unwrap();
        assert_eq!(
            (with.data.len(), with.data_omitted, with.data_len),
            (100, false, 100)
        );
        let without = decrypt_push(
            reg.push_key.as_bytes(),
            &encrypt(&reg, &job, &msg, false, FCM_MAX_ENC_LEN),
        )
        .unwrap();
        assert_eq!((without.data.len(), without.data_omitted), (0, true));
        let (reg, job, big) = fixture(5000);
        let enc = encrypt(&reg, &job, &big, true, FCM_MAX_ENC_LEN);
        assert!(enc.len() <= FCM_MAX_ENC_LEN);
        let n = decrypt_push(reg.push_key.as_bytes(), &enc).unwrap();
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
