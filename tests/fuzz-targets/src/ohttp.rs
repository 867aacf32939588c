//! The request target's OHTTP path: the relay's OHTTP gateway (`tidings_relay::ohttp`)
//! taking an encapsulated request, with the fixed relay secret's key at [`NOW_S`], and
//! dispatching into the recording gRPC servers of [`wire`].
//!
//! Three modes (selector bits, see [`crate::request`]):
//! - raw: the bytes are the body of the POST, as an OHTTP relay forwards it (the outer
//!   checks: header, key id, suite, decryption);
//! - bhttp: the bytes are the Binary HTTP request, encapsulated here to the gateway's key
//!   (decoding and mapping behind the encryption);
//! - grpc: the bytes are a gRPC message for the RPC the selector names, framed, wrapped in
//!   a well-formed Binary HTTP POST and encapsulated here: the answer must be what the gRPC
//!   listener gives (the handler gets exactly what prost decodes, else `INVALID_ARGUMENT`).

use std::{
    io::Cursor,
    sync::{Arc, OnceLock},
};

use bhttp::{Message, Mode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tidings_relay::{
    clock::ManualClock,
    config::Ohttp,
    ohttp::{
        Gateway, Peer,
        gateway::{Outcome, RESPONSE_MEDIA_TYPE},
        keys::{KeyRing, Schedule},
        message,
    },
};
use tonic::codegen::http;

use crate::{NOW_S, relay_keys, wire};

/// Polls one gateway call may take.
const POLLS: usize = 256;

fn key_ring() -> Arc<KeyRing> {
    static RING: OnceLock<Arc<KeyRing>> = OnceLock::new();
    Arc::clone(RING.get_or_init(|| {
        let clock = ManualClock::new(NOW_S * 1000);
        let ring = KeyRing::new(
            relay_keys().ohttp_root(),
            Schedule::from_config(&Ohttp::default()),
            Arc::new(clock),
        )
        .expect("the fuzz key derives");
        Arc::new(ring)
    }))
}

/// The gateway's key configuration at [`NOW_S`] (`application/ohttp-keys`).
pub fn key_config() -> Vec<u8> {
    key_ring().current().expect("a current key").key_config_list()
}

/// `inner` encapsulated to the gateway's current key, and what opens the answer.
pub fn encapsulate(inner: &[u8]) -> (Vec<u8>, ohttp::ClientResponse) {
    let mut configs = ohttp::KeyConfig::decode_list(&key_config()).expect("our own key configuration");
    ohttp::ClientRequest::from_config(&mut configs[0])
        .and_then(|c| c.encapsulate(inner))
        .expect("encapsulating to our own key")
}

/// A well-formed Binary HTTP gRPC call of `path` with `body` as its content.
pub fn grpc_call(path: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Message::request(
        b"POST".to_vec(),
        b"https".to_vec(),
        b"relay.example".to_vec(),
        path.as_bytes().to_vec(),
    );
    m.put_header("content-type", "application/grpc");
    m.put_header("te", "trailers");
    m.write_content(body);
    let mut out = Vec::new();
    m.write_bhttp(Mode::KnownLength, &mut out)
        .expect("writing into memory");
    out
}

/// What the gateway answered one POST body.
struct Answered {
    outcome: Outcome,
    status: u16,
    content_type: Option<String>,
    body: Bytes,
    handled: Option<Vec<u8>>,
}

fn post(encapsulated: &[u8]) -> Answered {
    let (services, got) = wire::recording_services();
    let gateway = Gateway::new(key_ring(), services, 1 << 20, "x-forwarded-for");
    let (outcome, response) = wire::finish_within(
        POLLS,
        gateway.answer_encapsulated(encapsulated, &http::HeaderMap::new(), Peer::default()),
    );
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = wire::finish_within(POLLS, response.into_body().collect())
        .map(|c| c.to_bytes())
        .unwrap_or_else(|never| match never {});
    let handled = got.lock().map(|g| g.clone()).unwrap_or_default();
    Answered {
        outcome,
        status,
        content_type,
        body,
        handled,
    }
}

/// The encapsulated answer, opened and decoded.
fn open(answered: &Answered, pending: ohttp::ClientResponse) -> Message {
    assert_eq!(answered.status, 200, "{:?}", answered.outcome);
    assert_eq!(answered.content_type.as_deref(), Some(RESPONSE_MEDIA_TYPE));
    let inner = pending
        .decapsulate(&answered.body)
        .expect("the gateway's answer opens with the request's context");
    Message::read_bhttp(&mut Cursor::new(&inner[..])).expect("the gateway writes Binary HTTP")
}

/// Raw mode: whatever arrives, the answer is an encapsulated one exactly when the request
/// opened with the key, else a 400 (malformed, or the RFC 9458 key problem).
pub fn raw(data: &[u8]) {
    let answered = post(data);
    match answered.outcome {
        Outcome::Answered | Outcome::Inner(_) => {
            assert_eq!(answered.status, 200);
            assert_eq!(answered.content_type.as_deref(), Some(RESPONSE_MEDIA_TYPE));
        }
        Outcome::Malformed | Outcome::KeyProblem => assert_eq!(answered.status, 400),
        other => panic!("an encapsulated request got {other:?}"),
    }
}

/// Bhttp mode: the decoder's verdict is what the client reads inside the answer.
pub fn bhttp(data: &[u8]) {
    let (encapsulated, pending) = encapsulate(data);
    let answered = post(&encapsulated);
    let answer = open(&answered, pending);
    let status = answer.control().status().map(u16::from);
    match message::decode_request(data) {
        Ok(_) => {
            assert_eq!(answered.outcome, Outcome::Answered);
            assert_eq!(status, Some(200), "a dispatched call is answered 200");
        }
        Err(refusal) => {
            assert_eq!(answered.outcome, Outcome::Inner(refusal));
            assert_eq!(status, Some(refusal.status().as_u16()));
            assert!(answered.handled.is_none(), "a refused request reached a handler");
        }
    }
}

/// Grpc mode: through the gateway, a payload is answered as the gRPC listener answers it.
pub fn grpc<M: prost::Message + Default>(path: &str, payload: &[u8]) {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(payload);
    let (encapsulated, pending) = encapsulate(&grpc_call(path, &frame));
    let answered = post(&encapsulated);
    let answer = open(&answered, pending);
    assert_eq!(answer.control().status().map(u16::from), Some(200));
    let grpc_status = answer
        .header()
        .get(b"grpc-status")
        .or_else(|| answer.trailer().get(b"grpc-status"))
        .expect("a gRPC answer carries grpc-status");
    match M::decode(payload) {
        Ok(message) => {
            assert_eq!(grpc_status, b"0", "a decodable request is answered OK");
            assert_eq!(
                answered.handled,
                Some(message.encode_to_vec()),
                "the handler got another request"
            );
        }
        Err(_) => {
            assert_eq!(grpc_status, b"3", "an undecodable request is INVALID_ARGUMENT");
            assert!(answered.handled.is_none());
        }
    }
}
