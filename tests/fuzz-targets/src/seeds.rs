//! The seed corpus: valid inputs of every target plus a few edge cases, written to
//! `fuzz/corpus/<target>/seed-<name>` by `TIDINGS_WRITE_FUZZ_CORPUS=1 cargo test -p
//! tidings-fuzz-targets --test corpus` (files found later by fuzzing sit next to them).

use prost::Message;
use tidings_device_link::config::{
    ConfigState, DeviceId, NotificationMode,
    envelope::{self, DEFAULT_MAX_MESSAGE_BYTES},
};
use tidings_proto::{
    push::encrypt_push,
    seal, sign,
    v1::{
        ConfigSnapshotChunk, DeleteRequest, DeviceRegistration, PushNotification, PushService,
        RetrieveRequest, StoreRequest, SubscribeRequest, UnsubscribeRequest,
    },
};

use crate::{APNS_APP, CONFIG_KEY, FCM_APP, NOW_S, PUSH_KEY, account, account_key, relay_keys};

/// One seed: the target it feeds, a file name, the bytes.
pub struct Seed {
    /// The target (corpus directory).
    pub target: &'static str,
    /// The file name without the `seed-` prefix.
    pub name: &'static str,
    /// The input, mode byte included.
    pub bytes: Vec<u8>,
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(rest);
    v
}

fn apns_registration() -> DeviceRegistration {
    DeviceRegistration {
        service: PushService::Apns as i32,
        token: "ab".repeat(32),
        app_id: APNS_APP.into(),
        push_key: PUSH_KEY.to_vec(),
        device_id: vec![2; 16],
        ..Default::default()
    }
}

fn fcm_registration() -> DeviceRegistration {
    DeviceRegistration {
        service: PushService::Fcm as i32,
        token: "fcm:token-123_abc.def".into(),
        app_id: FCM_APP.into(),
        push_key: PUSH_KEY.to_vec(),
        device_id: vec![3; 16],
        ..Default::default()
    }
}

fn note(data: Vec<u8>, omitted: bool) -> PushNotification {
    PushNotification {
        account: account().to_vec(),
        namespace: 3,
        hash: vec![2; 32],
        seq: 99,
        created_ms: NOW_S * 1000,
        expires_ms: NOW_S * 1000 + 86_400_000,
        data_len: data.len() as u32,
        data: if omitted { Vec::new() } else { data },
        data_omitted: omitted,
    }
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add =
        |target: &'static str, name: &'static str, bytes: Vec<u8>| out.push(Seed { target, name, bytes });

    // unseal_registration
    let keys = relay_keys();
    let relay_pub = keys.x25519_public();
    let me = account();
    let t = "unseal_registration";
    add(
        t,
        "sealed-apns",
        with_mode(0, &seal::seal_registration(&relay_pub, &me, &apns_registration())),
    );
    add(
        t,
        "sealed-fcm",
        with_mode(0, &seal::seal_registration(&relay_pub, &me, &fcm_registration())),
    );
    add(
        t,
        "plain-apns",
        with_mode(1, &apns_registration().encode_to_vec()),
    );
    add(t, "plain-fcm", with_mode(1, &fcm_registration().encode_to_vec()));
    let bad_token = DeviceRegistration {
        token: "zz".repeat(32),
        ..apns_registration()
    };
    add(t, "plain-bad-token", with_mode(1, &bad_token.encode_to_vec()));
    add(t, "plain-not-protobuf", with_mode(1, &[0xff; 12]));
    add(
        t,
        "sealed-other-account",
        with_mode(
            0,
            &seal::seal_registration(&relay_pub, &[1; 32], &apns_registration()),
        ),
    );
    add(t, "zero-ephemeral-key", with_mode(0, &[0; seal::OVERHEAD]));
    add(t, "too-short", with_mode(0, &[1; 10]));

    // push_payload
    let t = "push_payload";
    let full = note(b"hello, device".to_vec(), false);
    add(t, "enc", with_mode(0, encrypt_push(&PUSH_KEY, &full).as_bytes()));
    add(
        t,
        "enc-data-omitted",
        with_mode(0, encrypt_push(&PUSH_KEY, &note(vec![0; 3000], true)).as_bytes()),
    );
    add(
        t,
        "enc-other-key",
        with_mode(0, encrypt_push(&[8; 32], &full).as_bytes()),
    );
    add(t, "enc-not-base64", with_mode(0, b"not base64!"));
    let plain = full.encode_to_vec();
    let mut framed = u32::try_from(plain.len()).unwrap_or(0).to_be_bytes().to_vec();
    framed.extend_from_slice(&plain);
    framed.resize(256, 0);
    add(t, "framed", with_mode(1, &framed));
    let mut past_end = vec![0xff, 0xff, 0xff, 0xff];
    past_end.resize(256, 0);
    add(t, "framed-length-past-end", with_mode(1, &past_end));
    add(t, "framed-short", with_mode(1, &[0, 0]));
    add(t, "notification", with_mode(2, &plain));

    // config_message
    let t = "config_message";
    let config_account = [9u8; 32];
    let mut state = ConfigState::new(DeviceId([4; 16]));
    let mut delta = state.set_display_name("Ada").unwrap_or_default();
    if let Ok(d) = state.mark_read("conversation-1", 1_700_000_000_000) {
        delta.merge(&d);
    }
    delta.merge(&state.set_notification_mode(NotificationMode::Slow));
    if let Some(message) =
        envelope::seal_delta(&CONFIG_KEY, &config_account, &delta, DEFAULT_MAX_MESSAGE_BYTES)
            .unwrap_or_default()
            .into_iter()
            .next()
    {
        add(t, "delta-message", with_mode(0, &message));
    }
    let snapshot = state.snapshot();
    if let Some(message) =
        envelope::seal_snapshot(&CONFIG_KEY, &config_account, &snapshot, DEFAULT_MAX_MESSAGE_BYTES)
            .unwrap_or_default()
            .into_iter()
            .next()
    {
        add(t, "snapshot-message", with_mode(0, &message));
    }
    add(t, "delta-payload", with_mode(1, &delta.encode()));
    let chunk = ConfigSnapshotChunk {
        snapshot_id: vec![6; 16],
        index: 0,
        count: 1,
        data: snapshot.encode(),
    };
    add(t, "chunk-payload", with_mode(2, &chunk.encode_to_vec()));
    let split = ConfigSnapshotChunk {
        snapshot_id: vec![6; 16],
        index: 1,
        count: 2,
        data: snapshot.encode(),
    };
    add(t, "chunk-payload-half", with_mode(2, &split.encode_to_vec()));
    let bad_index = ConfigSnapshotChunk {
        index: 2,
        count: 2,
        ..chunk.clone()
    };
    add(
        t,
        "chunk-payload-bad-index",
        with_mode(2, &bad_index.encode_to_vec()),
    );
    add(t, "direct-snapshot", with_mode(3, &snapshot.encode()));
    add(t, "direct-delta", with_mode(3, &delta.encode()));
    add(t, "unknown-version", with_mode(0, &[2; 256]));
    add(t, "delta-payload-garbage", with_mode(1, &[0xff; 20]));

    // request
    let t = "request";
    let key = account_key();
    let store = |ns: i32, data: &[u8], ttl_ms: i64, ts: i64| {
        let bytes = sign::store_bytes(&me, ns.unsigned_abs(), ts, ttl_ms, data);
        StoreRequest {
            account: me.to_vec(),
            namespace: ns,
            data: data.to_vec(),
            ttl_ms,
            ts,
            signature: sign::sign(&key, &bytes).to_vec(),
        }
    };
    let deposit = StoreRequest {
        account: me.to_vec(),
        namespace: 0,
        data: b"a deposit".to_vec(),
        ..Default::default()
    };
    add(t, "store-deposit", with_mode(0, &deposit.encode_to_vec()));
    add(
        t,
        "store-owner-signed",
        with_mode(0, &store(10, b"config", 60_000, NOW_S).encode_to_vec()),
    );
    add(
        t,
        "store-resign",
        with_mode(0x80, &store(12, b"x", 0, 0).encode_to_vec()),
    );
    add(
        t,
        "store-stale",
        with_mode(0, &store(10, b"config", 0, NOW_S - 301).encode_to_vec()),
    );
    add(
        t,
        "store-bad-namespace",
        with_mode(0, &store(-1, b"", i64::MIN, 0).encode_to_vec()),
    );
    let retrieve = |ns: i32, wait_ms: u32| {
        let bytes = sign::retrieve_bytes(&me, ns.unsigned_abs(), NOW_S);
        RetrieveRequest {
            account: me.to_vec(),
            namespace: ns,
            after_seq: 5,
            limit: 10,
            wait_ms,
            ts: NOW_S,
            signature: sign::sign(&key, &bytes).to_vec(),
        }
    };
    add(t, "retrieve", with_mode(1, &retrieve(0, 0).encode_to_vec()));
    add(
        t,
        "retrieve-long-poll-resign",
        with_mode(0x81, &retrieve(10, 30_000).encode_to_vec()),
    );
    let hashes = vec![vec![1; 32], vec![2; 32], vec![1; 32]];
    let delete = DeleteRequest {
        account: me.to_vec(),
        namespace: 0,
        hashes: hashes.clone(),
        ts: NOW_S,
        signature: sign::sign(&key, &sign::delete_bytes(&me, 0, NOW_S, &hashes)).to_vec(),
    };
    add(t, "delete", with_mode(2, &delete.encode_to_vec()));
    let short_hash = DeleteRequest {
        hashes: vec![vec![1; 31]],
        ..delete.clone()
    };
    add(
        t,
        "delete-short-hash-resign",
        with_mode(0x82, &short_hash.encode_to_vec()),
    );
    let sealed = seal::seal_registration(&relay_pub, &me, &apns_registration());
    let namespaces = vec![0, 10, 12];
    let ns_u32: Vec<u32> = namespaces.iter().map(|n: &i32| n.unsigned_abs()).collect();
    let subscribe = SubscribeRequest {
        account: me.to_vec(),
        namespaces: namespaces.clone(),
        want_data: true,
        ts: NOW_S,
        signature: sign::sign(&key, &sign::subscribe_bytes(&me, NOW_S, true, &ns_u32, &sealed)).to_vec(),
        sealed,
    };
    add(t, "subscribe", with_mode(3, &subscribe.encode_to_vec()));
    let inner = SubscribeRequest {
        sealed: fcm_registration().encode_to_vec(),
        ..subscribe.clone()
    };
    add(
        t,
        "subscribe-seal-inside",
        with_mode(0xc3, &inner.encode_to_vec()),
    );
    let unsorted = SubscribeRequest {
        namespaces: vec![12, 10],
        ..subscribe.clone()
    };
    add(
        t,
        "subscribe-unsorted-resign",
        with_mode(0x83, &unsorted.encode_to_vec()),
    );
    let device = [2u8; 16];
    let unsubscribe = UnsubscribeRequest {
        account: me.to_vec(),
        device_id: device.to_vec(),
        ts: NOW_S,
        signature: sign::sign(&key, &sign::unsubscribe_bytes(&me, &device, NOW_S)).to_vec(),
    };
    add(t, "unsubscribe", with_mode(4, &unsubscribe.encode_to_vec()));
    add(
        t,
        "unsubscribe-resign",
        with_mode(0x84, &unsubscribe.encode_to_vec()),
    );
    add(t, "get-relay-info", vec![5]);
    add(t, "truncated-varint", with_mode(0, &[0x08, 0xff]));
    // Refused on the way in (INVALID_ARGUMENT, see `decode_path`): namespace sent
    // length-delimited, a field key beyond u32, a stray end-group tag.
    add(t, "store-wrong-wire-type", with_mode(0, &[0x12, 0x00]));
    add(
        t,
        "retrieve-key-too-large",
        with_mode(1, &[0xff, 0xff, 0xff, 0xff, 0x7f]),
    );
    add(t, "delete-end-group", with_mode(2, &[0x0c]));
    // Through the OHTTP gateway (bit 0x20, see `crate::ohttp`).
    let deposit_call = crate::ohttp::grpc_call(
        "/tidings.v1.Mailbox/Store",
        &grpc_framed(&deposit.encode_to_vec()),
    );
    add(
        t,
        "ohttp-raw",
        with_mode(0x20, &crate::ohttp::encapsulate(&deposit_call).0),
    );
    add(t, "ohttp-raw-short", with_mode(0x20, &[1, 0, 0x20, 0, 1, 0, 3]));
    add(t, "ohttp-bhttp-store", with_mode(0x30, &deposit_call));
    add(
        t,
        "ohttp-bhttp-not-an-rpc",
        with_mode(
            0x30,
            &crate::ohttp::grpc_call("/grpc.health.v1.Health/Check", &[]),
        ),
    );
    add(t, "ohttp-grpc-store", with_mode(0x28, &deposit.encode_to_vec()));
    add(
        t,
        "ohttp-grpc-retrieve",
        with_mode(0x29, &retrieve(0, 0).encode_to_vec()),
    );
    add(t, "ohttp-grpc-wrong-wire-type", with_mode(0x28, &[0x12, 0x00]));
    out
}

/// `payload` as one uncompressed gRPC message frame.
fn grpc_framed(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}
