//! The fuzz targets of tidings, as plain functions.
//!
//! `fuzz/` (a cargo-fuzz crate outside the workspace, built with a nightly or
//! `RUSTC_BOOTSTRAP=1`) wraps each function in `fuzz_target!`; `tests/corpus.rs` runs
//! every function over the committed corpus in `fuzz/corpus/<target>/`, so a stable
//! toolchain guards against regressions too.
//!
//! A target must never panic on any input: a panic is a finding. Where a target builds
//! valid ciphertext itself (the "plaintext" modes below) it also asserts what must hold
//! for honest input, e.g. that a round trip gives back what went in.
//!
//! Fuzzers cannot forge AEAD tags or Ed25519 signatures, so each target's first byte picks
//! a mode: either the bytes are taken as they arrive on the wire (to fuzz the outer
//! checks), or the target seals/signs them with fixed test keys first (to fuzz everything
//! behind the cryptography: protobuf decoding, framing and field validation).

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::SigningKey;
use prost::Message;
use tidings_device_link::config::{
    ConfigState, Delta, DeviceId, Snapshot,
    envelope::{self, Kind, SnapshotChunk},
    sync::{SyncConfig, SyncPlanner},
};
use tidings_proto::{
    aead,
    push::{PUSH_AAD, decrypt_push, encrypt_push},
    seal, sign,
    v1::{
        DeleteRequest, GetRelayInfoRequest, PushNotification, RetrieveRequest, StoreRequest, StoredMessage,
        SubscribeRequest, UnsubscribeRequest,
    },
};
use tidings_relay::{
    config::Limits,
    keys::RelayKeys,
    mailbox::validate,
    registration::{self, AppCatalog},
    relay_service,
};

pub mod ohttp;
pub mod seeds;
pub mod wire;

/// The relay's clock during a fuzz run (Unix seconds); re-signed requests carry it.
pub const NOW_S: i64 = 1_700_000_000;
/// The relay secret every target uses.
pub const RELAY_SECRET: [u8; 32] = [0x42; 32];
/// The Ed25519 seed of the account re-signed requests come from.
pub const ACCOUNT_SEED: [u8; 32] = [7; 32];
/// The push key of `push_payload`.
pub const PUSH_KEY: [u8; 32] = [9; 32];
/// The config key of `config_message`.
pub const CONFIG_KEY: [u8; 32] = [5; 32];
/// The APNs app the fuzzed relay serves.
pub const APNS_APP: &str = "ios.app";
/// The FCM app the fuzzed relay serves.
pub const FCM_APP: &str = "android.app";

/// The body of a fuzz target: any input, must not panic.
pub type Target = fn(&[u8]);

/// Every target: its name (the cargo-fuzz binary and corpus directory) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("unseal_registration", unseal_registration),
    ("push_payload", push_payload),
    ("config_message", config_message),
    ("request", request),
];

/// The account re-signed requests and sealed registrations are bound to.
pub fn account_key() -> SigningKey {
    SigningKey::from_bytes(&ACCOUNT_SEED)
}

/// The account id of [`account_key`].
pub fn account() -> [u8; 32] {
    account_key().verifying_key().to_bytes()
}

/// The relay keys every target uses.
pub fn relay_keys() -> RelayKeys {
    RelayKeys::from_secret(&RELAY_SECRET)
}

/// The apps the fuzzed relay serves.
pub struct Apps;

impl AppCatalog for Apps {
    fn has_apns(&self, app_id: &str) -> bool {
        app_id == APNS_APP
    }
    fn has_fcm(&self, app_id: &str) -> bool {
        app_id == FCM_APP
    }
}

/// Relay side of Fast Mode registration: opening a sealed `DeviceRegistration`,
/// validating it and keeping it encrypted at rest.
///
/// Mode (first byte, low bit): 0 = the rest is a sealed box as a client sends it;
/// 1 = the rest is a `DeviceRegistration` protobuf, sealed here to the relay first.
pub fn unseal_registration(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = relay_keys();
    let account = account();
    let sealed = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        seal::seal(&keys.x25519_public(), &account, rest)
    };
    let opened = seal::unseal_registration(keys.x25519_secret(), &account, &sealed);
    let reg = match opened {
        Ok(reg) => reg,
        Err(e) => {
            // A box sealed to this relay for this account always opens; only its content
            // can be wrong.
            assert!(
                mode & 1 == 0 || e == seal::UnsealError::Decode,
                "an honest box failed to open: {e}"
            );
            return;
        }
    };
    let Ok(valid) = registration::validate(reg, &Apps) else {
        return;
    };
    // What the relay stores must read back as exactly what it validated, in its row only.
    let index = keys.account_index(&account);
    let blob = registration::seal_at_rest(keys.at_rest_key(), &index, &valid);
    let back = registration::open_at_rest(keys.at_rest_key(), &index, &valid.device_id, &blob);
    assert_eq!(back.as_ref(), Ok(&valid), "at-rest round trip");
    let mut other_row = index;
    other_row.0[0] ^= 1;
    assert!(registration::open_at_rest(keys.at_rest_key(), &other_row, &valid.device_id, &blob).is_err());
}

/// Client side of Fast Mode: decrypting the `enc` string of a push (device-link's
/// `decrypt_push`, what the Notification Service Extension calls).
///
/// Mode (first byte % 3): 0 = the rest is the `enc` string as received; 1 = the rest is a
/// framed plaintext (`be32 len ‖ protobuf ‖ padding`, any bytes), encrypted here under
/// the push key; 2 = the rest is a `PushNotification` protobuf, sent through the relay's
/// encoder.
pub fn push_payload(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let enc = String::from_utf8_lossy(rest);
            let _ = tidings_device_link::client::decrypt_push(&enc, &PUSH_KEY);
        }
        1 => {
            let nonce = [3u8; 24];
            let mut raw = nonce.to_vec();
            raw.extend_from_slice(&aead::encrypt(&PUSH_KEY, &nonce, rest, PUSH_AAD));
            let enc = STANDARD.encode(raw);
            let out = tidings_device_link::client::decrypt_push(&enc, &PUSH_KEY);
            if rest.len() >= 4 {
                // Authentic: only the content can be refused, never the key or the encoding.
                assert!(
                    !matches!(
                        out,
                        Err(tidings_device_link::client::PushDecryptError::NotForThisDevice
                            | tidings_device_link::client::PushDecryptError::Malformed)
                    ),
                    "an authentic payload was refused: {out:?}"
                );
            }
            if let Ok(note) = out {
                let again = encrypt_push(&PUSH_KEY, &note);
                assert_eq!(decrypt_push(&PUSH_KEY, &again).as_ref(), Ok(&note));
            }
        }
        _ => {
            let Ok(note) = PushNotification::decode(rest) else {
                return;
            };
            let enc = encrypt_push(&PUSH_KEY, &note);
            let back = tidings_device_link::client::decrypt_push(&enc, &PUSH_KEY);
            assert_eq!(back.as_ref(), Ok(&note), "push round trip");
        }
    }
}

/// Config sync on a device: opening the encrypted envelope of a config message,
/// decoding the `ConfigDelta` / `ConfigSnapshotChunk` inside, reassembling snapshots and
/// merging them into the device's state.
///
/// Mode (first byte % 4): 0 = the rest is a stored config message as the relay returns
/// it; 1 = the rest is a delta payload, 2 = a snapshot-chunk payload, each sealed here
/// under the config key; 3 = the rest is decoded directly as a delta, a snapshot and a
/// chunk, each merged into a fresh state.
pub fn config_message(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let account = [9u8; 32];
    let message = match mode % 4 {
        0 => Some(rest.to_vec()),
        1 => envelope::seal(
            &CONFIG_KEY,
            &account,
            Kind::Delta,
            rest,
            envelope::DEFAULT_MAX_MESSAGE_BYTES,
        )
        .ok(),
        2 => envelope::seal(
            &CONFIG_KEY,
            &account,
            Kind::SnapshotChunk,
            rest,
            envelope::DEFAULT_MAX_MESSAGE_BYTES,
        )
        .ok(),
        _ => {
            decode_directly(rest);
            None
        }
    };
    let Some(message) = message else {
        return;
    };
    let mut state = ConfigState::new(DeviceId([1; 16]));
    let mut planner = SyncPlanner::new(CONFIG_KEY, account, SyncConfig::default());
    let stored = StoredMessage {
        hash: tidings_proto::hash::message_hash(&account, 10, &message).to_vec(),
        seq: 1,
        data: message,
        created_ms: NOW_S * 1000,
        expires_ms: NOW_S * 1000 + 1000,
    };
    // Twice: ingesting is idempotent, and the second pass exercises the known-item path.
    let _ = planner.ingest(&mut state, std::slice::from_ref(&stored));
    let _ = planner.reconcile(&mut state, std::slice::from_ref(&stored));
    let _ = planner.plan(&mut state, NOW_S * 1000);
    let _ = state.documents();
}

fn decode_directly(bytes: &[u8]) {
    if let Ok(delta) = Delta::decode(bytes) {
        let mut state = ConfigState::new(DeviceId([2; 16]));
        state.merge_delta(&delta);
        let _ = state.documents();
        let _ = delta.split();
        let _ = Delta::decode(&delta.encode());
    }
    if let Ok(snapshot) = Snapshot::decode(bytes) {
        let mut state = ConfigState::new(DeviceId([3; 16]));
        state.merge_snapshot(&snapshot);
        let _ = state.documents();
        let _ = Snapshot::decode(&snapshot.encode());
    }
    let _ = SnapshotChunk::decode(bytes);
}

/// Every gRPC request the relay accepts: the protobuf decoding tonic does, then the
/// relay's validation of that request (mailbox/validate.rs, relay_service.rs).
///
/// First byte: `% 8` picks the request (0 Store, 1 Retrieve, 2 Delete, 3 Subscribe,
/// 4 Unsubscribe, 5 GetRelayInfo, 6/7 Store again); bit 0x80 re-signs the decoded request
/// with the fuzz account at [`NOW_S`], so validation gets past the signature; for a
/// re-signed Subscribe, bit 0x40 first seals its `sealed` bytes to the relay, so the
/// registration inside is validated too.
///
/// Whatever the mode, the rest is first sent, as one gRPC frame, through the relay's own
/// decode path ([`wire::answer`]): it must reach the handler exactly when prost decodes
/// it, and be refused `INVALID_ARGUMENT` otherwise ([`decode_path`]).
///
/// Bit 0x20 takes the OHTTP gateway's way in instead ([`ohttp`]): with bit 0x10 the rest
/// is a Binary HTTP request, encapsulated here; with 0x08 (and not 0x10) it is a gRPC
/// message for the request `% 8` names, sent as a well-formed call through the gateway;
/// with neither it is the encapsulated request itself, as an OHTTP relay forwards it.
pub fn request(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 0x20 != 0 {
        return ohttp_request(selector, rest);
    }
    match selector % 8 {
        1 => decode_path::<RetrieveRequest>("/tidings.v1.Mailbox/Retrieve", "RetrieveRequest", rest),
        2 => decode_path::<DeleteRequest>("/tidings.v1.Mailbox/Delete", "DeleteRequest", rest),
        3 => decode_path::<SubscribeRequest>("/tidings.v1.Relay/Subscribe", "SubscribeRequest", rest),
        4 => decode_path::<UnsubscribeRequest>("/tidings.v1.Relay/Unsubscribe", "UnsubscribeRequest", rest),
        5 => {
            decode_path::<GetRelayInfoRequest>("/tidings.v1.Relay/GetRelayInfo", "GetRelayInfoRequest", rest)
        }
        _ => decode_path::<StoreRequest>("/tidings.v1.Mailbox/Store", "StoreRequest", rest),
    }
    let resign = selector & 0x80 != 0;
    let seal_inside = selector & 0x40 != 0;
    let limits = Limits::default();
    let key = account_key();
    let me = account();
    match selector % 8 {
        1 => {
            let Ok(mut req) = RetrieveRequest::decode(rest) else {
                return;
            };
            if resign {
                req.account = me.to_vec();
                req.ts = NOW_S;
                let ns = req.namespace.unsigned_abs();
                req.signature = sign::sign(&key, &sign::retrieve_bytes(&me, ns, NOW_S)).to_vec();
            }
            if let Ok(v) = validate::retrieve(&req, &limits, NOW_S) {
                assert!(v.limit <= limits.max_limit && v.wait_ms <= limits.max_wait_ms);
            }
        }
        2 => {
            let Ok(mut req) = DeleteRequest::decode(rest) else {
                return;
            };
            if resign {
                req.account = me.to_vec();
                req.ts = NOW_S;
                let ns = req.namespace.unsigned_abs();
                let bytes = sign::delete_bytes(&me, ns, NOW_S, &req.hashes);
                req.signature = sign::sign(&key, &bytes).to_vec();
            }
            if let Ok(v) = validate::delete(&req, &limits, NOW_S) {
                assert!(!v.hashes.is_empty() && v.hashes.len() <= req.hashes.len());
                assert!(v.hashes.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
            }
        }
        3 => {
            let Ok(mut req) = SubscribeRequest::decode(rest) else {
                return;
            };
            let keys = relay_keys();
            if resign {
                req.account = me.to_vec();
                req.ts = NOW_S;
                if seal_inside {
                    req.sealed = seal::seal(&keys.x25519_public(), &me, &req.sealed);
                }
                let namespaces: Vec<u32> = req.namespaces.iter().map(|n| n.unsigned_abs()).collect();
                let bytes = sign::subscribe_bytes(&me, NOW_S, req.want_data, &namespaces, &req.sealed);
                req.signature = sign::sign(&key, &bytes).to_vec();
            }
            if let Ok(v) = relay_service::validate_subscribe(&req, &keys, &Apps, &limits, NOW_S) {
                assert!(!v.namespaces.is_empty());
                assert!(v.namespaces.windows(2).all(|w| w[0] < w[1]));
                assert_eq!(v.account.as_slice(), req.account.as_slice());
            }
        }
        4 => {
            let Ok(mut req) = UnsubscribeRequest::decode(rest) else {
                return;
            };
            if resign {
                req.account = me.to_vec();
                req.ts = NOW_S;
                if let Ok(device) = <[u8; 16]>::try_from(req.device_id.as_slice()) {
                    let bytes = sign::unsubscribe_bytes(&me, &device, NOW_S);
                    req.signature = sign::sign(&key, &bytes).to_vec();
                }
            }
            let _ = relay_service::validate_unsubscribe(&req, &limits, NOW_S);
        }
        5 => {}
        _ => {
            let Ok(mut req) = StoreRequest::decode(rest) else {
                return;
            };
            if resign {
                req.account = me.to_vec();
                req.ts = NOW_S;
                let ns = req.namespace.unsigned_abs();
                let bytes = sign::store_bytes(&me, ns, NOW_S, req.ttl_ms, &req.data);
                req.signature = sign::sign(&key, &bytes).to_vec();
            }
            let len = req.data.len();
            if let Ok(v) = validate::store(req, &limits, NOW_S) {
                assert_eq!(v.data.len(), len);
                assert!(v.data.len() <= limits.max_message_bytes as usize);
                assert!((limits.min_ttl_ms..=limits.max_ttl_ms).contains(&v.ttl_ms));
            }
        }
    }
}

fn ohttp_request(selector: u8, rest: &[u8]) {
    if selector & 0x10 != 0 {
        return ohttp::bhttp(rest);
    }
    if selector & 0x08 == 0 {
        return ohttp::raw(rest);
    }
    match selector % 8 {
        1 => ohttp::grpc::<RetrieveRequest>("/tidings.v1.Mailbox/Retrieve", rest),
        2 => ohttp::grpc::<DeleteRequest>("/tidings.v1.Mailbox/Delete", rest),
        3 => ohttp::grpc::<SubscribeRequest>("/tidings.v1.Relay/Subscribe", rest),
        4 => ohttp::grpc::<UnsubscribeRequest>("/tidings.v1.Relay/Unsubscribe", rest),
        5 => ohttp::grpc::<GetRelayInfoRequest>("/tidings.v1.Relay/GetRelayInfo", rest),
        _ => ohttp::grpc::<StoreRequest>("/tidings.v1.Mailbox/Store", rest),
    }
}

/// Where prost's own text starts; the relay must not pass it on.
const PROST_PREFIX: &str = "failed to decode Protobuf message: ";

/// `payload`, framed, through the relay's decode path for `path`: a payload prost decodes
/// reaches the handler intact and is answered there (OK, from the recording handlers);
/// any other is `INVALID_ARGUMENT` "request: not a tidings.v1.`<type>` (`<what>`)", with
/// no handler run, `<what>` in fixed words (prost quotes numbers from the request, the
/// relay does not: no digit but UTF-8's) and naming the field prost names.
fn decode_path<M: Message + Default>(path: &str, type_name: &str, payload: &[u8]) {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(payload);
    let answer = wire::answer(path, frame.into());
    match M::decode(payload) {
        Ok(message) => {
            assert_eq!(answer.status.code(), tonic::Code::Ok, "{answer:?}");
            assert_eq!(
                answer.handled,
                Some(message.encode_to_vec()),
                "the handler got another request"
            );
        }
        Err(e) => {
            assert_eq!(answer.status.code(), tonic::Code::InvalidArgument, "{answer:?}");
            assert_eq!(answer.handled, None, "an undecodable request reached the handler");
            let said = answer.status.message();
            let what = said
                .strip_prefix(&format!("request: not a tidings.v1.{type_name} ("))
                .and_then(|w| w.strip_suffix(')'))
                .unwrap_or_else(|| panic!("does not name {type_name}: {said:?}"));
            // "UTF-8" is the one digit a fixed phrase may hold.
            assert!(
                what.replace("UTF-8", "")
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || " _.:-".contains(c)),
                "not in fixed words: {said:?}"
            );
            let prost_said = e.to_string();
            if let Some((field, _)) = prost_said
                .strip_prefix(PROST_PREFIX)
                .and_then(|r| r.split_once(": "))
                && field.contains('.')
                && !field.contains(' ')
            {
                assert!(
                    what.contains(field),
                    "{said:?} does not name {field} ({prost_said})"
                );
            }
        }
    }
}
