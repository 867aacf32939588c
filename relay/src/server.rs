//! Starting and stopping a relay: open the store, load the key, bind, serve gRPC and the
//! admin endpoints, sweep in the background; on shutdown drain, stop, flush.
//!
//! [`serve`] is three steps: build the services once (`services`), spawn the listeners
//! (`listeners`), spawn the background work (`background`); `lifecycle` owns the tokens
//! and the order of shutdown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tidings_relay::server::ServerError> {
//! let relay = tidings_relay::server::start(tidings_relay::config::Config::default()).await?;
//! println!("gRPC on {}", relay.grpc_addr());
//! relay.shutdown().await
//! # }
//! ```

mod background;
mod lifecycle;
mod listeners;
mod services;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;

use self::{
    background::Background,
    lifecycle::{Lifecycle, ListenerTask, Tasks},
    services::Shared,
};
use crate::{
    clock::{Clock, SystemClock},
    config::{Backend, Config, ConfigError},
    keys::{self, KeyError, RelayKeys},
    longpoll::Waiters,
    metrics::Metrics,
    store::{Store, StoreError, linkage::StoreKeys, postgres::PostgresStore, redb::RedbStore},
    sweeper::SweeperHandle,
    tls::{CertReloader, TlsError},
};

/// Why a relay could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration breaks a rule.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The relay key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed to open or to close.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The configuration asks for something this build cannot do yet.
    #[error("{0}")]
    Unsupported(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `listen` or `admin_listen`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files or setup.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// `reload_tls` on a relay started without TLS.
    #[error("TLS is not configured (tls_cert and tls_key)")]
    NoTls,
    /// The reflection service could not be built from the descriptor set.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The OHTTP gateway's keys could not be made.
    #[error("OHTTP gateway: {0}")]
    Ohttp(String),
    /// An app's push provider could not be set up (unreadable key, bad credentials).
    #[error("push provider: {0}")]
    Push(String),
    /// A background task panicked or an I/O error ended a server.
    #[error("{0}")]
    Task(String),
}

/// A relay serving on its addresses. Call [`RunningRelay::shutdown`] to stop it.
pub struct RunningRelay {
    config: Config,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    ohttp_addr: Option<SocketAddr>,
    shared: Shared,
    sweeper: SweeperHandle,
    health: tonic_health::server::HealthReporter,
    tls: Option<Arc<CertReloader>>,
    lifecycle: Lifecycle,
    tasks: Tasks,
}

impl std::fmt::Debug for RunningRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRelay")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Starts a relay with the system clock: opens the configured store, loads (or creates)
/// the relay key, binds `listen` and `admin_listen` (port 0 picks free ports) and serves.
pub async fn start(config: Config) -> Result<RunningRelay, ServerError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with another clock (tests move time to expire messages).
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<RunningRelay, ServerError> {
    config.validate()?;
    let key_path = config.relay_key_path();
    let keys = blocking(move || keys::load_or_create(&key_path)).await??;
    let store = open_store(&config, keys.store_keys()).await?;
    start_with_store(config, store, Arc::new(keys), clock).await
}

/// Starts a relay over an already opened store (other backends, tests). On failure the
/// store is closed again.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
    keys: Arc<RelayKeys>,
    clock: Arc<dyn Clock>,
) -> Result<RunningRelay, ServerError> {
    match bind_all(&config).await {
        Ok(listeners) => serve(config, store, keys, clock, listeners).await,
        Err(e) => {
            let _ = store.close().await;
            Err(e)
        }
    }
}

async fn open_store(config: &Config, store_keys: StoreKeys) -> Result<Arc<dyn Store>, ServerError> {
    match config.storage.backend {
        Backend::Embedded => {
            let dir = config.data_dir.clone();
            let cache = usize::try_from(config.storage.cache_mb)
                .unwrap_or(usize::MAX)
                .saturating_mul(1 << 20);
            let store = blocking(move || RedbStore::open_with_cache(&dir, store_keys, cache)).await??;
            Ok(Arc::new(store))
        }
        Backend::Postgres => {
            // `Config::validate` insists on the URL for this backend.
            let url = config.storage.postgres_url.as_deref().unwrap_or_default();
            Ok(Arc::new(PostgresStore::open(url, store_keys).await?))
        }
    }
}

/// The relay's listeners: gRPC, admin, and the OHTTP gateway's when enabled.
struct Listeners {
    grpc: TcpListener,
    admin: TcpListener,
    ohttp: Option<TcpListener>,
}

async fn bind_all(config: &Config) -> Result<Listeners, ServerError> {
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let ohttp = match config.ohttp.enabled {
        true => Some(bind("ohttp.listen", config.ohttp.listen).await?),
        false => None,
    };
    Ok(Listeners {
        grpc: bind("listen", config.listen).await?,
        admin: bind("admin_listen", config.admin_listen).await?,
        ohttp,
    })
}

async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    keys: Arc<RelayKeys>,
    clock: Arc<dyn Clock>,
    listeners: Listeners,
) -> Result<RunningRelay, ServerError> {
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let grpc_addr = local(&listeners.grpc, "listen", config.listen)?;
    let admin_addr = local(&listeners.admin, "admin_listen", config.admin_listen)?;
    let lifecycle = Lifecycle::default();
    let shared = Shared::new(store, keys, clock);
    let tls = load_tls(&config).await?;
    let services = services::build(&config, &shared, &lifecycle.draining).await?;

    let ohttp = match listeners.ohttp {
        Some(l) => Some(listeners::spawn_ohttp(
            &config,
            l,
            &services,
            &shared,
            tls.as_ref(),
            &lifecycle,
        )?),
        None => None,
    };
    let grpc = listeners::spawn_grpc(
        &config,
        listeners.grpc,
        &services,
        &shared,
        tls.as_ref(),
        &lifecycle,
    )?;
    let admin = listeners::spawn_admin(&config, listeners.admin, &shared, &services.providers, &lifecycle);
    let Background {
        sweeper,
        sweeper_task,
        notifier,
    } = background::spawn(&config, &shared, Arc::clone(&services.providers), &lifecycle);

    let (ohttp_addr, ohttp_task): (_, Option<ListenerTask>) = ohttp.unzip();
    if let Some(addr) = ohttp_addr {
        tracing::info!(ohttp_addr = %addr, "OHTTP gateway serving");
    }
    tracing::info!(%grpc_addr, %admin_addr, x25519 = %hex::encode(shared.keys.x25519_public()), "relay serving");
    Ok(RunningRelay {
        config,
        grpc_addr,
        admin_addr,
        ohttp_addr,
        shared,
        sweeper,
        health: services.health,
        tls,
        lifecycle,
        tasks: Tasks {
            grpc,
            admin,
            ohttp: ohttp_task,
            sweeper: sweeper_task,
            notifier,
        },
    })
}

impl RunningRelay {
    /// The bound gRPC address (the real port when `listen` said 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound address of the OHTTP gateway, when `[ohttp]` enables it.
    pub fn ohttp_addr(&self) -> Option<SocketAddr> {
        self.ohttp_addr
    }

    /// The configuration the relay runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store (tests inspect it; the push notifier will share it).
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.shared.store)
    }

    /// The relay's derived keys.
    pub fn keys(&self) -> Arc<RelayKeys> {
        Arc::clone(&self.shared.keys)
    }

    /// The long-poll registry; [`Waiters::notify_arrival`] wakes a mailbox's pollers.
    pub fn waiters(&self) -> Arc<Waiters> {
        Arc::clone(&self.shared.waiters)
    }

    /// The clock the relay reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.shared.clock)
    }

    /// The relay's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Re-reads `tls_cert` and `tls_key` (the binary calls this on SIGHUP): connections
    /// made afterwards get the new certificate, open ones keep theirs. If the files are
    /// unusable the old certificate stays and the error is returned (and logged).
    pub async fn reload_tls(&self) -> Result<(), ServerError> {
        let tls = self.tls.clone().ok_or(ServerError::NoTls)?;
        match blocking(move || tls.reload()).await? {
            Ok(()) => {
                tracing::info!("TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("TLS certificate not reloaded, keeping the old one: {e}");
                Err(e.into())
            }
        }
    }

    /// The background sweeper's counters and trigger.
    pub fn sweeper(&self) -> &SweeperHandle {
        &self.sweeper
    }

    /// Completes when the gRPC server has stopped on its own (an error), so a binary
    /// can exit instead of lingering without serving.
    pub async fn stopped(&self) {
        self.lifecycle.grpc_exited.cancelled().await;
    }

    /// Stops the relay: `/readyz` turns 503 and health NOT_SERVING, parked long-polls
    /// answer empty at once, in-flight calls finish (up to 10 s), the sweeper stops, the
    /// admin server stops, and the store flushes and closes.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        tracing::info!("shutting down: draining in-flight calls");
        let problems = self.tasks.shutdown(&self.lifecycle, &self.health).await;
        self.shared.store.close().await?;
        tracing::info!("relay stopped; storage flushed");
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ServerError::Task(problems.join("; ")))
        }
    }
}

/// Loads the configured certificate and key, if any (both or neither: `Config::validate`).
async fn load_tls(config: &Config) -> Result<Option<Arc<CertReloader>>, ServerError> {
    let (Some(cert), Some(key)) = (config.tls_cert.clone(), config.tls_key.clone()) else {
        return Ok(None);
    };
    let reloader = blocking(move || CertReloader::load(&cert, &key)).await??;
    Ok(Some(Arc::new(reloader)))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Task(format!("startup task: {e}")))
}
