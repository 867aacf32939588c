//! A request body that does not decode as its RPC's message is the client's error:
//! `INVALID_ARGUMENT`, naming the message type and what was wrong, never `INTERNAL`.
//!
//! tonic reads and decodes a unary request before it calls the handler, and answers any
//! failure on the way itself, as `INTERNAL`: a protobuf that prost refuses
//! (tonic-prost follows gRPC's status table, which files parse errors there), a body that
//! ends inside a message frame, a bad compressed-flag, a body without a message. For the
//! relay `INTERNAL` means "the server is broken": operators alert on it and clients
//! retry it. So [`DecodeErrorsLayer`] renames those answers, and only those.
//!
//! How it tells them apart. Not by a codec wrapper: the generated servers hard-code
//! `tonic_prost::ProstCodec`, and a codec only sees the protobuf step, not the frame
//! errors tonic's `Streaming` raises around it. Not by tonic's message texts alone either:
//! a handler's own `INTERNAL` (corrupt storage) might one day carry prost's words, and
//! renaming it would hide a real fault. Instead the layer puts a witness in the request's
//! extensions and the services are wrapped in [`Decoded`], which trips it as the handler
//! starts. An `INTERNAL` or `UNKNOWN` answer on one of the relay's RPCs whose handler was
//! never reached can only come from reading and decoding the request, whatever tonic's
//! wording; the wording is read only to say what was wrong, in fixed phrases (so no
//! request byte, not even a number prost quotes from it, reaches the client or a log).
//!
//! Anything that serves the relay's RPCs (the gRPC listener and the OHTTP gateway, both
//! through `server::services::rpc_layers`) must route calls through this layer and the
//! [`Decoded`] services.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use http::{HeaderMap, Request, Response};
use tidings_proto::v1::{
    DeleteRequest, DeleteResponse, GetRelayInfoRequest, RelayInfo, RetrieveRequest, RetrieveResponse,
    StoreRequest, StoreResponse, SubscribeRequest, SubscribeResponse, UnsubscribeRequest,
    UnsubscribeResponse, mailbox_server::Mailbox, relay_server::Relay,
};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// The relay's RPCs and the fully qualified type of each one's request message.
const REQUEST_TYPES: [(&str, &str); 6] = [
    ("/tidings.v1.Mailbox/Store", "tidings.v1.StoreRequest"),
    ("/tidings.v1.Mailbox/Retrieve", "tidings.v1.RetrieveRequest"),
    ("/tidings.v1.Mailbox/Delete", "tidings.v1.DeleteRequest"),
    ("/tidings.v1.Relay/GetRelayInfo", "tidings.v1.GetRelayInfoRequest"),
    ("/tidings.v1.Relay/Subscribe", "tidings.v1.SubscribeRequest"),
    ("/tidings.v1.Relay/Unsubscribe", "tidings.v1.UnsubscribeRequest"),
];

/// What prost says was wrong (words of its description), and what the client is told.
/// prost quotes numbers read from the request in some descriptions; the phrases do not.
const PROTOBUF_PROBLEMS: [(&str, &str); 11] = [
    ("length delimiter exceeds", "a length prefix is too large"),
    ("invalid varint", "invalid varint"),
    ("recursion limit", "nested too deeply"),
    // Before "invalid wire type", which it contains (the first match wins).
    ("invalid wire type value", "invalid wire type"),
    ("invalid wire type", "wrong wire type for the field"),
    ("invalid key value", "invalid field key"),
    ("invalid tag value", "field number 0"),
    ("buffer underflow", "ends too early"),
    (
        "delimited length exceeded",
        "a length prefix runs past its message",
    ),
    ("unexpected end group tag", "unexpected end-group tag"),
    ("invalid string value", "a string field is not UTF-8"),
];

/// What tonic says was wrong with the framing around the message, and what the client is told.
const FRAME_PROBLEMS: [(&str, &str); 6] = [
    ("Unexpected EOF", "the body ends inside a message frame"),
    ("Missing request message", "the body holds no message"),
    ("compressed-flag", "compressed-flag set without a grpc-encoding"),
    ("compression flag", "invalid compressed-flag in the message frame"),
    ("decompressing", "the message does not decompress"),
    ("h2 protocol error", "the request stream broke off"),
];

/// Where prost's text starts (tonic-prost passes it through as the status message).
const PROST_PREFIX: &str = "failed to decode Protobuf message: ";

/// The fully qualified request message type of a relay RPC, by request path.
pub fn request_type(path: &str) -> Option<&'static str> {
    REQUEST_TYPES.iter().find(|(p, _)| *p == path).map(|(_, ty)| *ty)
}

/// The answer to a request of `request_type` that tonic could not read or decode, given
/// tonic's status message: `INVALID_ARGUMENT`, "request: not a `<type>` (`<what>`)".
pub fn refusal(request_type: &str, tonic_message: &str) -> Status {
    Status::invalid_argument(format!(
        "request: not a {request_type} ({})",
        problem(tonic_message)
    ))
}

/// What was wrong, in fixed words: the field path prost names (type and field names from
/// the schema, nothing from the request) and a phrase from the tables above.
fn problem(tonic_message: &str) -> String {
    let Some(rest) = tonic_message.strip_prefix(PROST_PREFIX) else {
        return phrase(&FRAME_PROBLEMS, tonic_message, "unreadable request body").to_owned();
    };
    // prost writes "Message.field: " per nesting level, then its description.
    let mut fields = Vec::new();
    let mut description = rest;
    while let Some((head, tail)) = description.split_once(": ")
        && is_field_path(head)
    {
        fields.push(head);
        description = tail;
    }
    let what = phrase(&PROTOBUF_PROBLEMS, description, "malformed protobuf");
    if fields.is_empty() {
        what.to_owned()
    } else {
        format!("field {}: {what}", fields.join(" in "))
    }
}

fn phrase(table: &[(&str, &'static str)], text: &str, otherwise: &'static str) -> &'static str {
    table
        .iter()
        .find(|(words, _)| text.contains(words))
        .map_or(otherwise, |(_, said)| said)
}

/// `Message.field`, both identifiers.
fn is_field_path(s: &str) -> bool {
    let ident = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    s.split_once('.').is_some_and(|(m, f)| ident(m) && ident(f))
}

/// Tripped by [`Decoded`] when a handler starts: by then tonic has decoded the request.
#[derive(Clone, Debug, Default)]
struct HandlerReached(Arc<AtomicBool>);

impl HandlerReached {
    fn trip<T>(request: &tonic::Request<T>) {
        if let Some(witness) = request.extensions().get::<HandlerReached>() {
            witness.0.store(true, Ordering::Release);
        }
    }

    fn reached(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Renames tonic's `INTERNAL`/`UNKNOWN` answers to requests that never reached their
/// handler (so did not decode) to `INVALID_ARGUMENT`; see the module docs. Serve the
/// services wrapped in [`Decoded`] inside it.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorsLayer;

impl<S> Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors::new(inner)
    }
}

/// The service [`DecodeErrorsLayer`] builds.
#[derive(Clone, Debug)]
pub struct DecodeErrors<S> {
    inner: S,
}

impl<S> DecodeErrors<S> {
    /// Wraps one service (a server of [`Decoded`] services); [`DecodeErrorsLayer`] does
    /// this for a whole router.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DecodeErrors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = DecodeErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let watch = request_type(req.uri().path()).map(|ty| {
            let witness = HandlerReached::default();
            req.extensions_mut().insert(witness.clone());
            (ty, witness)
        });
        DecodeErrorsFuture {
            inner: self.inner.call(req),
            watch,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`DecodeErrors`].
    pub struct DecodeErrorsFuture<F> {
        #[pin]
        inner: F,
        watch: Option<(&'static str, HandlerReached)>,
    }
}

impl<F, B, E> Future for DecodeErrorsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(res), Some((ty, witness))) = (&mut result, this.watch.take())
            && !witness.reached()
        {
            rename_decode_failure(res.headers_mut(), ty);
        }
        Poll::Ready(result)
    }
}

/// Rewrites a trailers-only `INTERNAL`/`UNKNOWN` answer (tonic answers a request it could
/// not decode that way, status in the headers) as the [`refusal`]; leaves anything else.
fn rename_decode_failure(headers: &mut HeaderMap, request_type: &str) {
    let code = headers
        .get(Status::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()));
    if !matches!(code, Some(Code::Internal | Code::Unknown)) {
        return;
    }
    // Only status and message: details (none from tonic here) are not worth a panic path.
    let mut status_only = HeaderMap::new();
    for name in [Status::GRPC_STATUS, Status::GRPC_MESSAGE] {
        if let Some(v) = headers.get(&name) {
            status_only.insert(name, v.clone());
        }
    }
    let tonic_message = Status::from_header_map(&status_only)
        .map(|s| s.message().to_owned())
        .unwrap_or_default();
    let refused = refusal(request_type, &tonic_message);
    tracing::debug!(
        rpc = request_type,
        answer = refused.message(),
        "request does not decode"
    );
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    if refused.add_header(headers).is_err() {
        // The message is ASCII from fixed parts, so this cannot happen; keep the code right anyway.
        headers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("3"));
    }
}

/// A Mailbox or Relay service whose handlers first mark the call as decoded, for
/// [`DecodeErrorsLayer`]. Serve `MailboxServer::new(Decoded::new(mailbox))`.
#[derive(Debug)]
pub struct Decoded<T>(T);

impl<T> Decoded<T> {
    /// Wraps a service.
    pub fn new(service: T) -> Self {
        Self(service)
    }
}

type Answer<T> = Result<tonic::Response<T>, Status>;

#[tonic::async_trait]
impl<T: Mailbox> Mailbox for Decoded<T> {
    async fn store(&self, request: tonic::Request<StoreRequest>) -> Answer<StoreResponse> {
        HandlerReached::trip(&request);
        self.0.store(request).await
    }

    async fn retrieve(&self, request: tonic::Request<RetrieveRequest>) -> Answer<RetrieveResponse> {
        HandlerReached::trip(&request);
        self.0.retrieve(request).await
    }

    async fn delete(&self, request: tonic::Request<DeleteRequest>) -> Answer<DeleteResponse> {
        HandlerReached::trip(&request);
        self.0.delete(request).await
    }
}

#[tonic::async_trait]
impl<T: Relay> Relay for Decoded<T> {
    async fn get_relay_info(&self, request: tonic::Request<GetRelayInfoRequest>) -> Answer<RelayInfo> {
        HandlerReached::trip(&request);
        self.0.get_relay_info(request).await
    }

    async fn subscribe(&self, request: tonic::Request<SubscribeRequest>) -> Answer<SubscribeResponse> {
        HandlerReached::trip(&request);
        self.0.subscribe(request).await
    }

    async fn unsubscribe(&self, request: tonic::Request<UnsubscribeRequest>) -> Answer<UnsubscribeResponse> {
        HandlerReached::trip(&request);
        self.0.unsubscribe(request).await
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Mutex};

    use http_body::Frame;
    use prost::Message;
    use tidings_proto::v1::mailbox_server::MailboxServer;
    use tonic::codegen::Bytes;

    use super::*;

    /// The parts of `google.protobuf.FileDescriptorSet` that name RPCs and their inputs.
    #[derive(Clone, PartialEq, Message)]
    struct FileSet {
        #[prost(message, repeated, tag = "1")]
        file: Vec<File>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct File {
        #[prost(string, tag = "2")]
        package: String,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Svc>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Svc {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "2")]
        method: Vec<Method>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Method {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        input_type: String,
    }

    #[test]
    fn every_rpc_of_the_wire_contract_has_its_request_type() {
        let set = FileSet::decode(tidings_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut from_proto = BTreeMap::new();
        for file in &set.file {
            for svc in &file.service {
                for m in &svc.method {
                    let path = format!("/{}.{}/{}", file.package, svc.name, m.name);
                    from_proto.insert(path, m.input_type.trim_start_matches('.').to_owned());
                }
            }
        }
        let ours: BTreeMap<String, String> = REQUEST_TYPES
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect();
        assert_eq!(ours, from_proto);
        assert_eq!(
            request_type("/tidings.v1.Mailbox/Store"),
            Some("tidings.v1.StoreRequest")
        );
        assert_eq!(request_type("/grpc.health.v1.Health/Check"), None);
    }

    /// What tonic-prost answers for these bytes: `INTERNAL` with prost's text.
    fn tonic_text<M: Message + Default + std::fmt::Debug>(bytes: &[u8]) -> String {
        Status::internal(M::decode(bytes).unwrap_err().to_string())
            .message()
            .to_owned()
    }

    #[test]
    fn refusals_name_the_type_and_the_problem_in_fixed_words() {
        // namespace (field 2, a varint) sent length-delimited.
        let wrong_wire = tonic_text::<StoreRequest>(&[0x12, 0x00]);
        assert!(wrong_wire.contains("StoreRequest.namespace"), "{wrong_wire}");
        let r = refusal("tidings.v1.StoreRequest", &wrong_wire);
        assert_eq!(r.code(), Code::InvalidArgument);
        assert_eq!(
            r.message(),
            "request: not a tidings.v1.StoreRequest (field StoreRequest.namespace: wrong wire type for the field)"
        );
        // A key beyond u32: prost quotes the number, the refusal does not.
        let key = tonic_text::<RetrieveRequest>(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(key.contains("34359738367"), "{key}");
        assert_eq!(
            refusal("tidings.v1.RetrieveRequest", &key).message(),
            "request: not a tidings.v1.RetrieveRequest (invalid field key)"
        );
        // data (field 3) claims 200 bytes and has 3.
        let short = tonic_text::<StoreRequest>(&[0x1a, 0xc8, 0x01, 1, 2, 3]);
        assert_eq!(
            refusal("tidings.v1.StoreRequest", &short).message(),
            "request: not a tidings.v1.StoreRequest (field StoreRequest.data: ends too early)"
        );
        let wire7 = tonic_text::<DeleteRequest>(&[0x0f]);
        assert_eq!(
            refusal("tidings.v1.DeleteRequest", &wire7).message(),
            "request: not a tidings.v1.DeleteRequest (invalid wire type)"
        );
        let frames = [
            (
                "Unexpected EOF decoding stream.",
                "the body ends inside a message frame",
            ),
            ("Missing request message.", "the body holds no message"),
            (
                "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request",
                "invalid compressed-flag in the message frame",
            ),
            (
                "something tonic never said: 0xdeadbeef",
                "unreadable request body",
            ),
        ];
        for (said, told) in frames {
            assert_eq!(
                refusal("tidings.v1.SubscribeRequest", said).message(),
                format!("request: not a tidings.v1.SubscribeRequest ({told})")
            );
        }
    }

    /// A one-message request body.
    struct Once(Option<Bytes>);

    impl http_body::Body for Once {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }
    }

    /// A Mailbox whose Store fails the way corrupt storage does, with prost's words.
    #[derive(Clone, Default)]
    struct Broken {
        calls: Arc<Mutex<Vec<StoreRequest>>>,
    }

    #[tonic::async_trait]
    impl Mailbox for Broken {
        async fn store(&self, request: tonic::Request<StoreRequest>) -> Answer<StoreResponse> {
            self.calls.lock().unwrap().push(request.into_inner());
            Err(Status::internal(
                "failed to decode Protobuf message: a stored row",
            ))
        }
        async fn retrieve(&self, _: tonic::Request<RetrieveRequest>) -> Answer<RetrieveResponse> {
            Ok(tonic::Response::new(RetrieveResponse::default()))
        }
        async fn delete(&self, _: tonic::Request<DeleteRequest>) -> Answer<DeleteResponse> {
            Ok(tonic::Response::new(DeleteResponse::default()))
        }
    }

    /// One call through the layer and a real generated server; the status and what the
    /// handler received.
    async fn call(path: &str, body: Vec<u8>) -> (Status, Vec<StoreRequest>) {
        let broken = Broken::default();
        let mut svc = DecodeErrorsLayer.layer(MailboxServer::new(Decoded::new(broken.clone())));
        let req = Request::post(path)
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(Once(Some(Bytes::from(body)))))
            .unwrap();
        let res = svc.call(req).await.unwrap();
        let calls = broken.calls.lock().unwrap().clone();
        (Status::from_header_map(res.headers()).unwrap(), calls)
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn only_failures_before_the_handler_are_renamed() {
        let store = "/tidings.v1.Mailbox/Store";
        // Undecodable: tonic answers INTERNAL, the client gets INVALID_ARGUMENT.
        let (status, calls) = call(store, framed(&[0x12, 0x00])).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(
            status.message(),
            "request: not a tidings.v1.StoreRequest (field StoreRequest.namespace: wrong wire type for the field)"
        );
        assert!(calls.is_empty());
        // A frame cut short and a bad flag are the request's fault too.
        for body in [vec![0, 0, 0, 0, 9, 1], vec![7, 0, 0, 0, 0], vec![]] {
            let (status, _) = call(store, body.clone()).await;
            assert_eq!(status.code(), Code::InvalidArgument, "{body:?}: {status:?}");
            assert!(
                status
                    .message()
                    .starts_with("request: not a tidings.v1.StoreRequest ("),
                "{status:?}"
            );
        }
        // Decoded, then the handler fails: a real fault stays INTERNAL, words and all.
        let good = StoreRequest {
            namespace: 3,
            ..StoreRequest::default()
        };
        let (status, calls) = call(store, framed(&good.encode_to_vec())).await;
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.message(),
            "failed to decode Protobuf message: a stored row"
        );
        assert_eq!(calls, [good]);
        // A path that is not an RPC of ours is left to tonic (UNIMPLEMENTED).
        let (status, _) = call("/tidings.v1.Mailbox/Nope", framed(&[])).await;
        assert_eq!(status.code(), Code::Unimplemented);
    }
}
