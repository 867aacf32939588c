//! A tower layer around every gRPC service: counts each call by RPC and gRPC status, and
//! times it from arrival to status.
//!
//! tonic puts the status of an answered call in the response trailers, after the body;
//! an early refusal (bad request, oversize, unimplemented) is "trailers-only", with the
//! status in the headers. So the response body is wrapped and the call is recorded when
//! its status goes by, or as CANCELLED when the body is dropped before that (the client
//! went away, e.g. in the middle of a long-poll).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use super::Metrics;

/// The RPCs the relay serves; any other path is counted as `other`, so a client cannot
/// invent label values.
const KNOWN_RPCS: [&str; 10] = [
    "/tidings.v1.Mailbox/Store",
    "/tidings.v1.Mailbox/Retrieve",
    "/tidings.v1.Mailbox/Delete",
    "/tidings.v1.Relay/GetRelayInfo",
    "/tidings.v1.Relay/Subscribe",
    "/tidings.v1.Relay/Unsubscribe",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// gRPC status codes by number, spelled as in the gRPC specification.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The label of a request path: itself when it is a known RPC, else `other`.
pub fn rpc_label(path: &str) -> &'static str {
    KNOWN_RPCS
        .iter()
        .find(|k| **k == path)
        .copied()
        .unwrap_or("other")
}

/// The label of a `grpc-status` value: its name, `UNKNOWN` for anything unrecognised.
pub fn code_label(value: &[u8]) -> &'static str {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .and_then(|n| CODES.get(n).copied())
        .unwrap_or("UNKNOWN")
}

fn status_in(headers: &HeaderMap) -> Option<&'static str> {
    headers.get("grpc-status").map(|v| code_label(v.as_bytes()))
}

/// Wraps gRPC services so their calls are counted in [`Metrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service [`GrpcMetricsLayer`] builds.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let call = Call {
            metrics: Arc::clone(&self.metrics),
            rpc: rpc_label(req.uri().path()),
            started: Instant::now(),
        };
        MeteredFuture {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

/// One call being timed; recorded exactly once.
struct Call {
    metrics: Arc<Metrics>,
    rpc: &'static str,
    started: Instant,
}

impl Call {
    fn finish(self, code: &'static str) {
        self.metrics.rpc_finished(self.rpc, code, self.started.elapsed());
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetrics`].
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<MeteredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(res) => {
                // Trailers-only answers carry the status already: record now.
                let pending = match status_in(res.headers()) {
                    Some(code) => {
                        if let Some(call) = call {
                            call.finish(code);
                        }
                        None
                    }
                    None => call,
                };
                Ok(res.map(|inner| MeteredBody { inner, call: pending }))
            }
            Err(e) => {
                // tonic's routes do not fail (errors are statuses), but a layer might.
                if let Some(call) = call {
                    call.finish("UNKNOWN");
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the status trailer passes, the body
    /// ends without one, or the body is dropped unfinished.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish("CANCELLED");
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(code) = f.trailers_ref().and_then(status_in)
                    && let Some(call) = this.call.take()
                {
                    call.finish(code);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.finish("UNKNOWN");
                }
            }
            None => {
                // Ended without a status trailer: not a well-formed gRPC answer.
                if let Some(call) = this.call.take() {
                    call.finish("UNKNOWN");
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_lists() {
        assert_eq!(
            rpc_label("/tidings.v1.Mailbox/Store"),
            "/tidings.v1.Mailbox/Store"
        );
        assert_eq!(rpc_label("/tidings.v1.Mailbox/0123abcd"), "other");
        assert_eq!(code_label(b"0"), "OK");
        assert_eq!(code_label(b"8"), "RESOURCE_EXHAUSTED");
        assert_eq!(code_label(b"99"), "UNKNOWN");
        assert_eq!(code_label(b"x"), "UNKNOWN");
    }
}
