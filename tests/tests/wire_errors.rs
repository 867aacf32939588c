//! What a hostile client gets for bodies that are almost right: mutated (bit-flipped,
//! byte-inserted) and truncated encodings of valid requests, sent raw to every RPC of
//! both services of a real relay. A body that does not decode is `INVALID_ARGUMENT`
//! naming the message type (or `RESOURCE_EXHAUSTED` when its frame claims more than the
//! relay accepts); one that still decodes reaches the handler and gets its answer, `OK`
//! when it decodes to the valid request itself. Never `INTERNAL` or `UNKNOWN`; the
//! metrics count exactly what the client got, and the relay keeps serving.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{cell::RefCell, collections::BTreeMap};

use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config as ProptestConfig, TestCaseError, TestRunner},
};
use prost::Message;
use tidings_proto::{
    hash::message_hash,
    v1::{
        DeleteRequest, GetRelayInfoRequest, RetrieveRequest, StoreRequest, SubscribeRequest,
        UnsubscribeRequest,
    },
};
use tidings_tests::{
    Account, RawReply, STEP, grpc_frame, http_get, now_s,
    push::{Device, PushRig, subscribe_request, unsubscribe_request},
    raw_grpc, within,
};
use tonic::Code;

/// Mutated cases per run: enough to hit every RPC and mutation kind many times, few
/// enough to run in seconds.
const CASES: u32 = 256;

/// What a handler may answer a request that decoded (DESIGN.md, "Errors are gRPC
/// statuses"), besides OK. UNAVAILABLE is left out: nothing here makes storage refuse.
const HANDLER_CODES: [Code; 5] = [
    Code::Ok,
    Code::InvalidArgument,
    Code::Unauthenticated,
    Code::PermissionDenied,
    Code::ResourceExhausted,
];

/// One RPC: its path, its request type, a valid encoded request, and how to tell
/// whether a payload decodes to that same request (`None`: it does not decode).
struct Rpc {
    path: &'static str,
    request_type: &'static str,
    valid: Vec<u8>,
    same_as_valid: fn(&[u8], &[u8]) -> Option<bool>,
}

fn same_as<M: Message + Default + PartialEq>(payload: &[u8], valid: &[u8]) -> Option<bool> {
    let decoded = M::decode(payload).ok()?;
    Some(M::decode(valid).ok() == Some(decoded))
}

/// The valid requests: a deposit, a Retrieve and a Delete of it, GetRelayInfo, and a
/// Subscribe and Unsubscribe of one phone; all signed now, so they stay valid for the
/// run (the clock window is minutes).
fn rpcs(rig: &PushRig, alice: &Account, phone: &Device) -> Vec<Rpc> {
    let data = b"almost right".as_slice();
    let hash = message_hash(&alice.id(), 0, data).to_vec();
    vec![
        Rpc {
            path: "/tidings.v1.Mailbox/Store",
            request_type: "tidings.v1.StoreRequest",
            valid: alice.deposit(0, data, 0).encode_to_vec(),
            same_as_valid: same_as::<StoreRequest>,
        },
        Rpc {
            path: "/tidings.v1.Mailbox/Retrieve",
            request_type: "tidings.v1.RetrieveRequest",
            valid: alice.retrieve(0, 0, 0, 0).encode_to_vec(),
            same_as_valid: same_as::<RetrieveRequest>,
        },
        Rpc {
            path: "/tidings.v1.Mailbox/Delete",
            request_type: "tidings.v1.DeleteRequest",
            valid: alice.delete(0, &[hash]).encode_to_vec(),
            same_as_valid: same_as::<DeleteRequest>,
        },
        Rpc {
            path: "/tidings.v1.Relay/GetRelayInfo",
            request_type: "tidings.v1.GetRelayInfoRequest",
            valid: GetRelayInfoRequest {}.encode_to_vec(),
            same_as_valid: same_as::<GetRelayInfoRequest>,
        },
        Rpc {
            path: "/tidings.v1.Relay/Subscribe",
            request_type: "tidings.v1.SubscribeRequest",
            // Namespace 5, so the deposits into 0 push nothing.
            valid: subscribe_request(alice, &rig.relay_pub(), &[5], false, &phone.registration())
                .encode_to_vec(),
            same_as_valid: same_as::<SubscribeRequest>,
        },
        Rpc {
            path: "/tidings.v1.Relay/Unsubscribe",
            request_type: "tidings.v1.UnsubscribeRequest",
            valid: unsubscribe_request(alice, &phone.device_id, now_s()).encode_to_vec(),
            same_as_valid: same_as::<UnsubscribeRequest>,
        },
    ]
}

/// One change to a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: Index, bit: u8 },
    Insert { at: Index, byte: u8 },
    Truncate { to: Index },
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Mutation::Flip { at, bit } if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Mutation::Insert { at, byte } => {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, *byte);
            }
            Mutation::Truncate { to } => bytes.truncate(to.index(bytes.len() + 1)),
            Mutation::Flip { .. } => {}
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<Index>().prop_map(|to| Mutation::Truncate { to }),
    ]
}

/// A case: which RPC, whether the mutations hit the whole framed body (header
/// included) or the protobuf inside a correct frame, and the mutations.
fn case() -> impl Strategy<Value = (usize, bool, Vec<Mutation>)> {
    (0usize..6, any::<bool>(), prop::collection::vec(mutation(), 1..=3))
}

/// What the relay must answer a body, worked out the way tonic reads a unary request:
/// length-prefixed frames to the end of the body, each uncompressed and decoded.
#[derive(Debug, PartialEq)]
enum Expected {
    /// Does not decode: INVALID_ARGUMENT naming the type.
    Refused,
    /// A frame longer than the relay accepts: RESOURCE_EXHAUSTED.
    TooLarge,
    /// Decodes; `true` when the first message is the valid request itself.
    Decodes(bool),
}

fn expected(rpc: &Rpc, mut body: &[u8], limit: usize) -> Expected {
    let mut first = None;
    loop {
        if body.is_empty() {
            return first.map_or(Expected::Refused, Expected::Decodes);
        }
        let Some((header, rest)) = body.split_first_chunk::<5>() else {
            return Expected::Refused;
        };
        if header[0] != 0 {
            // Compressed (no grpc-encoding was sent) or no valid flag at all.
            return Expected::Refused;
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > limit {
            return Expected::TooLarge;
        }
        if rest.len() < len {
            return Expected::Refused;
        }
        let (payload, after) = rest.split_at(len);
        let Some(same) = (rpc.same_as_valid)(payload, &rpc.valid) else {
            return Expected::Refused;
        };
        first.get_or_insert(same);
        body = after;
    }
}

/// Checks one answer against what was expected.
fn check(rpc: &Rpc, expected: &Expected, reply: &RawReply) -> Result<(), TestCaseError> {
    prop_assert_eq!(reply.http_status, 200, "{:?}", reply);
    let code = reply.grpc_status.map(Code::from_i32);
    let message = reply.grpc_message.as_deref().unwrap_or_default();
    let refusal = format!("request: not a {} (", rpc.request_type);
    match expected {
        Expected::Refused => {
            prop_assert_eq!(code, Some(Code::InvalidArgument), "{:?}", reply);
            prop_assert!(message.starts_with(&refusal), "{:?}", reply);
            prop_assert!(message.ends_with(')'), "{:?}", reply);
        }
        Expected::TooLarge => {
            prop_assert_eq!(code, Some(Code::ResourceExhausted), "{:?}", reply);
            prop_assert!(
                message.starts_with("request: larger than the relay accepts"),
                "{:?}",
                reply
            );
        }
        Expected::Decodes(same) => {
            prop_assert!(code.is_some_and(|c| HANDLER_CODES.contains(&c)), "{:?}", reply);
            prop_assert!(
                !message.starts_with("request: not a"),
                "decoded, yet refused: {:?}",
                reply
            );
            if *same {
                prop_assert_eq!(code, Some(Code::Ok), "the valid request itself: {:?}", reply);
            }
        }
    }
    Ok(())
}

/// The body a case sends.
fn body(rpc: &Rpc, whole_frame: bool, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = if whole_frame {
        grpc_frame(&rpc.valid).to_vec()
    } else {
        rpc.valid.clone()
    };
    for m in mutations {
        m.apply(&mut bytes);
    }
    if whole_frame {
        bytes
    } else {
        grpc_frame(&bytes).to_vec()
    }
}

fn code_name(code: i32) -> &'static str {
    match Code::from_i32(code) {
        Code::Ok => "OK",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        other => panic!("no answer of this test should be {other:?}"),
    }
}

/// The value of the sample `series` (name and labels, exactly) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn mutated_and_truncated_requests_are_client_errors_on_every_rpc() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if !rt.block_on(tidings_tests::backend_ready(concat!(
        module_path!(),
        ":",
        line!()
    ))) {
        return;
    }
    let rig = rt.block_on(async {
        PushRig::builder()
            .configure(|c| {
                // Every decodable case reaches validation, not a rate limit; no long-poll
                // holds a Retrieve whose cursor a mutation moved past the end.
                c.rate_limits.enabled = false;
                c.limits.max_wait_ms = 0;
            })
            .start()
            .await
    });
    let addr = rig.relay().addr;
    let limit = rig.relay().relay().config().limits.max_request_bytes();
    let alice = Account::random();
    let phone = Device::apns();
    let rpcs = rpcs(&rig, &alice, &phone);
    // Every answer, by (rpc, code), to compare with the metrics afterwards.
    let answered = RefCell::new(BTreeMap::<(&str, i32), u64>::new());
    let send = |rpc: &Rpc, body: Vec<u8>| {
        let reply = rt
            .block_on(within(STEP, rpc.path, raw_grpc(addr, rpc.path, body.into())))
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", rpc.path));
        if let Some(code) = reply.grpc_status {
            *answered.borrow_mut().entry((rpc.path, code)).or_default() += 1;
        }
        reply
    };

    // Unmutated, in this order (store, then delete what was stored …), all succeed: the
    // handlers are reachable and the valid requests really are valid.
    for rpc in &rpcs {
        let reply = send(rpc, grpc_frame(&rpc.valid).to_vec());
        assert_eq!(
            reply.grpc_status,
            Some(Code::Ok as i32),
            "{}: {reply:?}",
            rpc.path
        );
    }

    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // How the cases fell, to show (and check) that they reach both sides of the decoder.
    let kinds = RefCell::new(BTreeMap::<String, u32>::new());
    let outcome = runner.run(&case(), |(which, whole_frame, mutations)| {
        let rpc = &rpcs[which];
        let body = body(rpc, whole_frame, &mutations);
        let expected = expected(rpc, &body, limit);
        *kinds.borrow_mut().entry(format!("{expected:?}")).or_default() += 1;
        let reply = send(rpc, body);
        check(rpc, &expected, &reply)
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }

    rt.block_on(async {
        let relay = rig.relay();
        // The metrics saw what the clients saw, and no INTERNAL or UNKNOWN anywhere.
        let (status, text) = within(STEP, "scrape", http_get(relay.admin_addr(), "/metrics"))
            .await
            .expect("the admin listener answers");
        assert_eq!(status, 200, "{text}");
        for ((path, code), n) in answered.borrow().iter() {
            let series = format!(
                "tidings_grpc_requests_total{{rpc=\"{path}\",code=\"{}\"}}",
                code_name(*code)
            );
            assert_eq!(sample(&text, &series), Some(*n as f64), "{series}");
        }
        for bad in ["INTERNAL", "UNKNOWN"] {
            let label = format!("code=\"{bad}\"");
            assert!(
                !text
                    .lines()
                    .any(|l| l.starts_with("tidings_grpc_requests_total") && l.contains(&label)),
                "{bad} was counted:\n{text}"
            );
        }

        // Alive: a typed client still stores and reads back.
        let mut mailbox = relay.mailbox.clone();
        let bob = Account::random();
        within(
            STEP,
            "store after",
            mailbox.store(bob.deposit(1, b"still here", 0)),
        )
        .await
        .expect("the relay still stores");
        assert_eq!(relay.retrieve_all(&bob, 1).await.len(), 1);
    });
    let kinds = kinds.into_inner();
    println!("cases by expected answer: {kinds:?}");
    assert!(
        kinds.contains_key("Refused"),
        "no case was refused: the mutations do not bite"
    );
    assert!(
        kinds.keys().any(|k| k.starts_with("Decodes")),
        "no case decoded: the handlers were never reached"
    );
    rt.block_on(async move { drop(rig) });
}
