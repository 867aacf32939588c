//! The HTTP/2 listener shared by both mocks: TLS with ALPN or cleartext h2c, one task per
//! connection, everything torn down on shutdown or drop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::tls::{TlsError, TlsIdentity};

/// Bodies above this are refused before any handler sees them: no real push comes close.
const MAX_BODY: usize = 1 << 20;

/// How a mock speaks HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/2 over TLS, negotiated with ALPN; the endpoint is `https://`.
    Tls,
    /// Cleartext HTTP/2 with prior knowledge (h2c); the endpoint is `http://`.
    H2c,
}

/// Why a mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening socket could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS identity could not be made or loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A key in the mock's configuration could not be parsed.
    #[error("bad key in mock configuration: {0}")]
    Key(#[from] crate::jwt::KeyError),
}

/// State kept per client connection; Apple tracks provider-token changes per connection.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Monotonic connection number, for diagnostics.
    #[allow(dead_code)]
    pub id: u64,
    /// The provider token last accepted on this connection and when it was first seen.
    pub provider_token: Mutex<Option<(String, Instant)>>,
}

/// A request with its body collected, plus the connection it came on.
pub(crate) struct MockRequest {
    pub parts: Parts,
    pub body: Bytes,
    pub conn: Arc<Connection>,
}

/// A running listener; dropping it stops the accept loop and closes every connection.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    transport: Transport,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `bind` and serves `handler` for every request; `h2_only` refuses HTTP/1.1 like
    /// APNs does, otherwise HTTP/1.1 is served too (Google's OAuth endpoint speaks both).
    pub async fn start<H, F>(
        bind: SocketAddr,
        transport: Transport,
        tls: Option<&TlsIdentity>,
        h2_only: bool,
        handler: H,
    ) -> Result<Server, StartError>
    where
        H: Fn(MockRequest) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let acceptor = match (transport, tls) {
            (Transport::Tls, Some(identity)) => {
                let alpn: &[&[u8]] = if h2_only { &[b"h2"] } else { &[b"h2", b"http/1.1"] };
                Some(TlsAcceptor::from(identity.server_config(alpn)?))
            }
            (Transport::Tls, None) => {
                return Err(StartError::Io(std::io::Error::other(
                    "TLS transport without identity",
                )));
            }
            (Transport::H2c, _) => None,
        };
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, acceptor, h2_only, handler, stop));
        Ok(Server {
            addr,
            transport,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self.transport {
            Transport::Tls => "https",
            Transport::H2c => "http",
        }
    }

    /// Stops accepting, closes every connection and waits until the server task is gone.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    h2_only: bool,
    handler: H,
    mut stop: oneshot::Receiver<()>,
) where
    H: Fn(MockRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
    // Dropping the set when the loop ends aborts every open connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let conn = Arc::new(Connection {
                    id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
                    provider_token: Mutex::new(None),
                });
                connections.spawn(serve(stream, acceptor.clone(), h2_only, handler.clone(), conn));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve<H, F>(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    h2_only: bool,
    handler: H,
    conn: Arc<Connection>,
) where
    H: Fn(MockRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let conn = conn.clone();
        async move {
            let (parts, body) = req.into_parts();
            let response = match Limited::new(body, MAX_BODY).collect().await {
                Ok(body) => {
                    handler(MockRequest {
                        parts,
                        body: body.to_bytes(),
                        conn,
                    })
                    .await
                }
                Err(_) => plain(http::StatusCode::PAYLOAD_TOO_LARGE),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if h2_only {
        builder = builder.http2_only();
    }
    let result = match acceptor {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
            Err(_) => return,
        },
        None => builder.serve_connection(TokioIo::new(stream), service).await,
    };
    if let Err(err) = result {
        tracing::debug!(%err, "mock connection ended with an error");
    }
}

/// A bodiless response with `status`.
pub(crate) fn plain(status: http::StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// A JSON response with `status` and optional extra headers.
pub(crate) fn json_response(
    status: http::StatusCode,
    body: &serde_json::Value,
    headers: &[(&'static str, String)],
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            map.insert(*name, value);
        }
    }
    response
}
