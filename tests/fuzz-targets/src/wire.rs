//! A request's way in, as the relay serves it, without a network or a store: the
//! generated tonic servers (tonic-prost decodes the body) wrapped in the relay's
//! [`Decoded`] and [`DecodeErrors`] (what `DecodeErrorsLayer` adds to the server), with handlers that only record what they got.
//!
//! Every step of a unary call with a body that is already complete finishes at its first
//! poll, so no runtime is needed; [`answer`] still polls a bounded number of times.

use std::{
    convert::Infallible,
    pin::{Pin, pin},
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use http_body::{Body as _, Frame};
use prost::Message;
use tidings_proto::v1::{
    DeleteRequest, DeleteResponse, GetRelayInfoRequest, RelayInfo, RetrieveRequest, RetrieveResponse,
    StoreRequest, StoreResponse, SubscribeRequest, SubscribeResponse, UnsubscribeRequest,
    UnsubscribeResponse,
    mailbox_server::{Mailbox, MailboxServer},
    relay_server::{Relay, RelayServer},
};
use tidings_relay::decode_errors::{DecodeErrors, Decoded};
use tonic::{
    Request, Response, Status,
    codegen::{Bytes, Service, http},
};

/// How many polls a call may take; it takes one.
const POLLS: usize = 16;

/// What the relay answered a call.
#[derive(Debug)]
pub struct Answer {
    /// The gRPC status (OK included).
    pub status: Status,
    /// The request the handler got, re-encoded; `None` when no handler ran.
    pub handled: Option<Vec<u8>>,
}

/// Sends `body` (the whole HTTP/2 request body: gRPC frames) to the RPC at `path`.
///
/// # Panics
/// When the call does not finish within [`POLLS`] polls or answers without a status:
/// findings, since neither can happen to a well-behaved server.
pub fn answer(path: &str, body: Bytes) -> Answer {
    let recorder = Recorder::default();
    let req = http::Request::post(path)
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(Whole(Some(body))))
        .expect("a static request head");
    let res = if path.starts_with("/tidings.v1.Mailbox/") {
        finish(DecodeErrors::new(MailboxServer::new(Decoded::new(recorder.clone()))).call(req))
    } else {
        finish(DecodeErrors::new(RelayServer::new(Decoded::new(recorder.clone()))).call(req))
    };
    let status = match Status::from_header_map(res.headers()) {
        Some(status) => status,
        None => trailer_status(res.into_body()),
    };
    let handled = recorder.got.lock().map(|g| g.clone()).unwrap_or_default();
    Answer { status, handled }
}

/// The relay's two gRPC servers over handlers that only record, as one service routed by
/// path, wrapped like `answer` wraps them: what the OHTTP gateway dispatches into in the
/// fuzz targets. The second value is what the last handler got (re-encoded).
pub fn recording_services() -> (Services, Arc<Mutex<Option<Vec<u8>>>>) {
    let recorder = Recorder::default();
    let got = Arc::clone(&recorder.got);
    let services = Services {
        mailbox: DecodeErrors::new(MailboxServer::new(Decoded::new(recorder.clone()))),
        relay: DecodeErrors::new(RelayServer::new(Decoded::new(recorder))),
    };
    (services, got)
}

/// See [`recording_services`].
#[derive(Clone)]
pub struct Services {
    mailbox: DecodeErrors<MailboxServer<Decoded<Recorder>>>,
    relay: DecodeErrors<RelayServer<Decoded<Recorder>>>,
}

type Answering = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl Service<http::Request<tonic::body::Body>> for Services {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Answering;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Answering {
        if req.uri().path().starts_with("/tidings.v1.Mailbox/") {
            Box::pin(self.mailbox.call(req))
        } else {
            Box::pin(self.relay.call(req))
        }
    }
}

/// Polls `fut` to its end without a runtime (every step of these calls is ready at once).
///
/// # Panics
/// When it does not finish within `polls` polls: a finding.
pub fn finish_within<F: Future>(polls: usize, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..polls {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a call with a complete body did not finish in {polls} polls");
}

fn finish<F: Future<Output = Result<T, Infallible>>, T>(fut: F) -> T {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS {
        if let Poll::Ready(Ok(out)) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a call with a complete body did not finish in {POLLS} polls");
}

/// Reads a response body to its trailers and their status.
fn trailer_status(body: tonic::body::Body) -> Status {
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(Status::from_header_map) {
                    return status;
                }
            }
            Poll::Ready(Some(Err(status))) => return status,
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
    }
    panic!("an answer without a gRPC status");
}

/// A request body that is all there from the start.
struct Whole(Option<Bytes>);

impl http_body::Body for Whole {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

/// Handlers that keep what they were given and answer a default response.
#[derive(Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Recorder {
    fn keep<M: Message, R: Default>(&self, request: Request<M>) -> Result<Response<R>, Status> {
        if let Ok(mut got) = self.got.lock() {
            *got = Some(request.into_inner().encode_to_vec());
        }
        Ok(Response::new(R::default()))
    }
}

type Answered<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Mailbox for Recorder {
    async fn store(&self, r: Request<StoreRequest>) -> Answered<StoreResponse> {
        self.keep(r)
    }
    async fn retrieve(&self, r: Request<RetrieveRequest>) -> Answered<RetrieveResponse> {
        self.keep(r)
    }
    async fn delete(&self, r: Request<DeleteRequest>) -> Answered<DeleteResponse> {
        self.keep(r)
    }
}

#[tonic::async_trait]
impl Relay for Recorder {
    async fn get_relay_info(&self, r: Request<GetRelayInfoRequest>) -> Answered<RelayInfo> {
        self.keep(r)
    }
    async fn subscribe(&self, r: Request<SubscribeRequest>) -> Answered<SubscribeResponse> {
        self.keep(r)
    }
    async fn unsubscribe(&self, r: Request<UnsubscribeRequest>) -> Answered<UnsubscribeResponse> {
        self.keep(r)
    }
}
