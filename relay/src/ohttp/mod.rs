//! Oblivious HTTP (RFC 9458): the relay as an OHTTP gateway, so a client can reach it
//! through an independent OHTTP relay. The OHTTP relay sees the client's address but only
//! ciphertext; this relay sees the request but only the OHTTP relay's address.
//!
//! - [`keys`]: one X25519 key per epoch, derived from the relay secret, rotated on a
//!   schedule, the previous key accepted for a grace period.
//! - [`message`]: a gRPC call as Binary HTTP (RFC 9292), trailers included.
//! - [`gateway`]: the gateway resource at `/.well-known/ohttp-gateway` — key configuration
//!   (RFC 9540), decapsulation, in-process dispatch to the relay's gRPC stack, the
//!   encapsulated answer, and the precise refusals.
//! - [`serve`]: the gateway's own listener (HTTP/1.1 and HTTP/2, optionally TLS). Its own,
//!   not the admin listener: that one serves `/metrics` and belongs on a private network,
//!   while the gateway faces the OHTTP relays.
//!
//! Every call goes through the same layered services as the gRPC listener
//! (`server.rs` builds them once), so validation, signatures, limits and metrics apply
//! unchanged; the OHTTP relay's address is the peer the rate limits see, with its own
//! budget when it is listed in `ohttp.relays` ([`crate::limits::ThroughOhttp`]).

pub mod gateway;
pub mod keys;
pub mod message;

use std::{convert::Infallible, io, sync::Arc, time::Duration};

use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

pub use gateway::{Gateway, Peer};

/// How long a stopping gateway waits for its connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a peer may take to send a request head.
const HEADER_READ: Duration = Duration::from_secs(30);
/// HTTP/2 pings keep idle connections from OHTTP relays alive through NATs.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// The pause after a failed accept (out of file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The ALPN protocols of a TLS gateway: OHTTP relays speak HTTP/2 or HTTP/1.1.
pub fn tls_config(base: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = base.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves `gateway` on `listener` (plain HTTP, or TLS with `tls`) until `stop`, with at most
/// `max_connections` open at once; then lets open requests finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    gateway: Arc<Gateway>,
    max_connections: usize,
    stop: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A peer gets HEADER_READ to send a request head (hyper enforces it only with a
    // timer), so idle or slow connections cannot hold the connection slots for ever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE);
    match tls {
        None => loop {
            let Some(permit) = acquire(&slots, &stop).await else {
                break;
            };
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((tcp, remote)) => {
                    // Best effort: small answers should not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    let peer = Peer {
                        remote: Some(remote),
                        local: Some(local),
                    };
                    connection(&builder, &graceful, &gateway, tcp, peer, permit);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "OHTTP gateway: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        },
        Some(config) => {
            let mut incoming = crate::tls::incoming(listener, config);
            loop {
                let Some(permit) = acquire(&slots, &stop).await else {
                    break;
                };
                let next = tokio::select! {
                    () = stop.cancelled() => break,
                    n = incoming.next() => n,
                };
                match next {
                    Some(Ok(stream)) => {
                        let peer = Peer {
                            remote: stream.get_ref().0.peer_addr().ok(),
                            local: Some(local),
                        };
                        connection(&builder, &graceful, &gateway, stream, peer, permit);
                    }
                    // A failed handshake is the client's business; tls::incoming logs it.
                    Some(Err(_)) => {}
                    None => break,
                }
            }
        }
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("OHTTP gateway: requests still open after {DRAIN:?}; cutting them off");
    }
    Ok(())
}

async fn acquire(
    slots: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        () = stop.cancelled() => None,
        p = Arc::clone(slots).acquire_owned() => p.ok(),
    }
}

/// Serves one connection in its own task, holding `permit` until it closes.
fn connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    gateway: &Arc<Gateway>,
    io: IO,
    peer: Peer,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The OHTTP relay's address, never a client's; still only at debug.
    if let Some(remote) = peer.remote {
        tracing::debug!(peer = %remote, "OHTTP gateway: connection accepted");
    }
    let gateway = Arc::clone(gateway);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let gateway = Arc::clone(&gateway);
        async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service).into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        // A connection the peer broke off is its business.
        let _ = conn.await;
        drop(permit);
    });
}
