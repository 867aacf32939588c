//! A gRPC call as Binary HTTP (RFC 9292), both ways: the decapsulated request becomes the
//! `http::Request` the relay's gRPC services take, and their answer, trailers included,
//! becomes the response to encapsulate (DESIGN.md "Oblivious HTTP", "The bhttp mapping").
//!
//! A request must be `POST` to one of the relay's six RPC paths with a `content-type` of
//! `application/grpc` (or `application/grpc+proto`); its content is the gRPC body (framed
//! messages) and its trailer section is ignored (gRPC requests have none). The response
//! carries the status (200), the response header fields (`content-type`, and the gRPC
//! status itself when the answer is trailers-only), the framed message as content, and
//! `grpc-status`, `grpc-message`, `grpc-status-details-bin` and any other trailing
//! metadata as its trailer section. Both are written in known-length form.
//!
//! What is refused, and how (each answer inside the encapsulated response):
//! undecodable bhttp or a response where a request belongs → 400; another path → 404;
//! another method → 405; another content type → 415.

use std::io::Cursor;

use bhttp::{Message, Mode, StatusCode as BhttpStatus};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;

use crate::decode_errors;

/// Fields that belong to one HTTP/1.1 or HTTP/2 connection, never to a message (RFC 9110
/// §7.6.1; RFC 9113 §8.2.2): dropped from the inner request, never written into a response.
const CONNECTION_FIELDS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
];

/// Why an inner request is not dispatched: the status answered inside the encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The decapsulated bytes are not a Binary HTTP request.
    #[error("not a Binary HTTP request")]
    Malformed,
    /// A field name or value that HTTP does not allow.
    #[error("a header field is not valid HTTP")]
    BadField,
    /// The path is not one of the relay's RPCs.
    #[error("not a tidings RPC")]
    NotFound,
    /// An RPC path with another method than POST.
    #[error("RPCs take POST")]
    Method,
    /// An RPC path with a body that is not gRPC.
    #[error("the content is not application/grpc")]
    MediaType,
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Malformed | Refusal::BadField => StatusCode::BAD_REQUEST,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// The refusal as a Binary HTTP response (plain-text reason, `allow` on a 405).
    pub fn to_bhttp(self) -> Vec<u8> {
        let mut m = Message::response(bhttp_status(self.status()));
        m.put_header("content-type", "text/plain; charset=utf-8");
        if self == Refusal::Method {
            m.put_header("allow", "POST");
        }
        m.write_content(format!("{self}\n"));
        write(&m)
    }

    /// A label for logs and metrics (fixed words, nothing from the request).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed_bhttp",
            Refusal::BadField => "bad_field",
            Refusal::NotFound => "not_found",
            Refusal::Method => "method_not_allowed",
            Refusal::MediaType => "unsupported_media_type",
        }
    }
}

/// Decodes the decapsulated request and checks that it is a call of one of the relay's
/// RPCs. The body is the request's content; its URI is the path alone (the services
/// route by path; the authority names the relay, whichever way it was reached).
pub fn decode_request(bhttp: &[u8]) -> Result<Request<Bytes>, Refusal> {
    let message = Message::read_bhttp(&mut Cursor::new(bhttp)).map_err(|_| Refusal::Malformed)?;
    let control = message.control();
    let (Some(method), Some(path)) = (control.method(), control.path()) else {
        // A response, or a request without a path.
        return Err(Refusal::Malformed);
    };
    let path = std::str::from_utf8(path).map_err(|_| Refusal::NotFound)?;
    if decode_errors::request_type(path).is_none() {
        return Err(Refusal::NotFound);
    }
    if method != b"POST" {
        return Err(Refusal::Method);
    }
    let mut headers = HeaderMap::new();
    for field in message.header().iter() {
        let name = HeaderName::from_bytes(field.name()).map_err(|_| Refusal::BadField)?;
        if CONNECTION_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_bytes(field.value()).map_err(|_| Refusal::BadField)?;
        headers.append(name, value);
    }
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_grpc_proto);
    if !grpc {
        return Err(Refusal::MediaType);
    }
    let mut request = Request::new(Bytes::copy_from_slice(message.content()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = path.parse().map_err(|_| Refusal::NotFound)?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    // gRPC over HTTP/2 says `te: trailers`; tonic does not look, but keep the call as it
    // would arrive on the gRPC listener.
    request
        .headers_mut()
        .insert(http::header::TE, HeaderValue::from_static("trailers"));
    Ok(request)
}

/// `application/grpc` or `application/grpc+proto`, parameters aside.
fn is_grpc_proto(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/grpc") || media.eq_ignore_ascii_case("application/grpc+proto")
}

/// Why a response could not be read to its end.
#[derive(Debug, thiserror::Error)]
#[error("the response body failed: {0}")]
pub struct BodyError(String);

/// Reads `response` to its end (a held long-poll included) and writes it as a Binary HTTP
/// response, its trailers as the trailer section; `extra` header fields are added.
pub async fn encode_response<B>(
    response: Response<B>,
    extra: &[(&'static str, String)],
) -> Result<Vec<u8>, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|e| BodyError(e.to_string()))?;
    let trailers = collected.trailers().cloned();
    let content = collected.to_bytes();
    let mut m = Message::response(bhttp_status(parts.status));
    put_fields(&parts.headers, |n, v| m.put_header(n, v));
    for (name, value) in extra {
        m.put_header(*name, value.as_bytes());
    }
    m.write_content(&content);
    if let Some(trailers) = trailers {
        put_fields(&trailers, |n, v| m.put_trailer(n, v));
    }
    Ok(write(&m))
}

fn put_fields(headers: &HeaderMap, mut put: impl FnMut(&[u8], &[u8])) {
    for (name, value) in headers {
        // The content is known-length; a length field would only be checked, not used.
        if CONNECTION_FIELDS.contains(&name.as_str()) || name == http::header::CONTENT_LENGTH {
            continue;
        }
        put(name.as_str().as_bytes(), value.as_bytes());
    }
}

fn bhttp_status(status: StatusCode) -> BhttpStatus {
    // http's StatusCode is always within 100..=999; bhttp takes 100..=599, and every
    // status the relay produces is in there.
    BhttpStatus::try_from(status.as_u16())
        .unwrap_or_else(|_| BhttpStatus::try_from(500u16).expect("500 is a valid status"))
}

fn write(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every length written comes from memory.
    m.write_bhttp(Mode::KnownLength, &mut out)
        .expect("writing Binary HTTP into memory");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(method: &[u8], path: &[u8], content_type: Option<&[u8]>, content: &[u8]) -> Vec<u8> {
        let mut m = Message::request(
            method.to_vec(),
            b"https".to_vec(),
            b"relay.example".to_vec(),
            path.to_vec(),
        );
        if let Some(ct) = content_type {
            m.put_header("content-type", ct);
        }
        m.put_header("grpc-timeout", "30S");
        m.put_header("connection", "close");
        m.write_content(content);
        write(&m)
    }

    #[test]
    fn a_grpc_call_becomes_the_request_the_services_take() {
        let bytes = request(
            b"POST",
            b"/tidings.v1.Mailbox/Store",
            Some(b"application/grpc"),
            &[0, 0, 0, 0, 1, 8],
        );
        let req = decode_request(&bytes).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/tidings.v1.Mailbox/Store");
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.headers()["grpc-timeout"], "30S");
        assert!(
            req.headers().get("connection").is_none(),
            "connection fields stay out"
        );
        assert_eq!(req.headers()["te"], "trailers");
        assert_eq!(req.body().as_ref(), &[0, 0, 0, 0, 1, 8]);
    }

    #[test]
    fn each_refusal_has_its_status() {
        let cases: [(Vec<u8>, Refusal, u16); 6] = [
            (vec![0x00, 0x04], Refusal::Malformed, 400),
            (vec![0x01, 0x40, 0xc8, 0, 0, 0], Refusal::Malformed, 400),
            (
                request(
                    b"POST",
                    b"/grpc.health.v1.Health/Check",
                    Some(b"application/grpc"),
                    &[],
                ),
                Refusal::NotFound,
                404,
            ),
            (
                request(
                    b"GET",
                    b"/tidings.v1.Relay/GetRelayInfo",
                    Some(b"application/grpc"),
                    &[],
                ),
                Refusal::Method,
                405,
            ),
            (
                request(
                    b"POST",
                    b"/tidings.v1.Relay/Subscribe",
                    Some(b"application/json"),
                    &[],
                ),
                Refusal::MediaType,
                415,
            ),
            (
                request(
                    b"POST",
                    b"/tidings.v1.Relay/Subscribe",
                    Some(b"application/grpc\n"),
                    &[],
                ),
                Refusal::BadField,
                400,
            ),
        ];
        for (bytes, refusal, status) in cases {
            assert_eq!(decode_request(&bytes).unwrap_err(), refusal, "{bytes:?}");
            assert_eq!(refusal.status().as_u16(), status);
            let answer = Message::read_bhttp(&mut Cursor::new(refusal.to_bhttp())).unwrap();
            assert_eq!(answer.control().status().map(u16::from), Some(status));
        }
        let allow = Message::read_bhttp(&mut Cursor::new(Refusal::Method.to_bhttp())).unwrap();
        assert_eq!(allow.header().get(b"allow"), Some(&b"POST"[..]));
    }

    #[tokio::test]
    async fn a_response_keeps_its_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("retry-after-ms", HeaderValue::from_static("5"));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\x02ab"))),
            Ok(http_body::Frame::trailers(trailers)),
        ]));
        let res = Response::builder()
            .header("content-type", "application/grpc")
            .header("content-length", "7")
            .body(body)
            .unwrap();
        let bytes = encode_response(res, &[("x-extra", "1".to_owned())])
            .await
            .unwrap();
        let m = Message::read_bhttp(&mut Cursor::new(&bytes[..])).unwrap();
        assert_eq!(m.control().status().map(u16::from), Some(200));
        assert_eq!(m.header().get(b"content-type"), Some(&b"application/grpc"[..]));
        assert_eq!(m.header().get(b"content-length"), None);
        assert_eq!(m.header().get(b"x-extra"), Some(&b"1"[..]));
        assert_eq!(m.content(), b"\0\0\0\0\x02ab");
        assert_eq!(m.trailer().get(b"grpc-status"), Some(&b"0"[..]));
        assert_eq!(m.trailer().get(b"retry-after-ms"), Some(&b"5"[..]));
    }

    proptest! {
        #[test]
        fn no_input_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
        }

        #[test]
        fn rpc_calls_round_trip(content in proptest::collection::vec(any::<u8>(), 0..2048), rpc in 0usize..6) {
            let paths = [
                "/tidings.v1.Mailbox/Store", "/tidings.v1.Mailbox/Retrieve", "/tidings.v1.Mailbox/Delete",
                "/tidings.v1.Relay/GetRelayInfo", "/tidings.v1.Relay/Subscribe", "/tidings.v1.Relay/Unsubscribe",
            ];
            let bytes = request(b"POST", paths[rpc].as_bytes(), Some(b"application/grpc+proto"), &content);
            let req = decode_request(&bytes).unwrap();
            prop_assert_eq!(req.uri().path(), paths[rpc]);
            prop_assert_eq!(req.body().as_ref(), &content[..]);
        }
    }
}
