//! Resolving Web Push hosts: every address is checked against the [`EndpointPolicy`]
//! before any connection, and the HTTP client connects only to the addresses that were
//! checked (it resolves through [`Guard`], which hands out the pinned ones), so a DNS
//! answer that changes between the check and the connection (rebinding) changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::endpoint::{EndpointError, EndpointPolicy};

/// How long checked addresses of a host are used before it is resolved again.
const PIN_TTL: Duration = Duration::from_secs(30);
/// Hosts are chosen by clients: the pin table forgets everything past this many.
const MAX_PINNED: usize = 10_000;

/// Looks up a host's addresses. The relay uses the system resolver; tests substitute
/// names that resolve wherever they like, without sending anything anywhere.
pub trait HostResolver: Send + Sync {
    /// The addresses of `host`, with `port`.
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// Why a host was not connected to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The policy refuses the endpoint or one of its addresses.
    #[error("web push endpoint refused: {0}")]
    Policy(#[from] EndpointError),
    /// The name did not resolve (possibly for now only).
    #[error("web push endpoint host does not resolve: {0}")]
    Dns(String),
}

/// The policy, the resolver and the addresses checked recently.
pub(crate) struct Guard {
    policy: EndpointPolicy,
    resolver: Arc<dyn HostResolver>,
    pinned: Mutex<HashMap<String, Pinned>>,
}

#[derive(Clone)]
struct Pinned {
    addrs: Vec<SocketAddr>,
    until: Instant,
}

impl Guard {
    pub(crate) fn new(policy: EndpointPolicy, resolver: Arc<dyn HostResolver>) -> Self {
        Self {
            policy,
            resolver,
            pinned: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn policy(&self) -> &EndpointPolicy {
        &self.policy
    }

    /// Checks `endpoint` and, for a host name, resolves it and checks every address,
    /// pinning them for the connection. Nothing is sent anywhere.
    pub(crate) async fn check(&self, endpoint: &str) -> Result<reqwest::Url, Refusal> {
        let url = self.policy.check_url(endpoint)?;
        if let Some(url::Host::Domain(host)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            self.addresses(&host.to_ascii_lowercase(), port).await?;
        }
        Ok(url)
    }

    /// The checked addresses of `host`: pinned ones while fresh, else resolved and checked.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        if let Some(p) = self.pinned(host) {
            return Ok(with_port(p, port));
        }
        let addrs = self
            .resolver
            .lookup(host, port)
            .await
            .map_err(|e| Refusal::Dns(e.kind().to_string()))?;
        if addrs.is_empty() {
            return Err(Refusal::Dns("no addresses".into()));
        }
        // Any refused address refuses the host: a name that mixes public and private
        // answers is exactly what a rebinding attack looks like.
        for addr in &addrs {
            self.policy.check_addr(host, addr.ip())?;
        }
        let mut pinned = self
            .pinned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pinned.len() >= MAX_PINNED {
            pinned.clear();
        }
        pinned.insert(
            host.to_owned(),
            Pinned {
                addrs: addrs.clone(),
                until: Instant::now() + PIN_TTL,
            },
        );
        Ok(addrs)
    }

    fn pinned(&self, host: &str) -> Option<Vec<SocketAddr>> {
        let pinned = self
            .pinned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pinned
            .get(host)
            .filter(|p| Instant::now() < p.until)
            .map(|p| p.addrs.clone())
    }
}

fn with_port(mut addrs: Vec<SocketAddr>, port: u16) -> Vec<SocketAddr> {
    for a in &mut addrs {
        a.set_port(port);
    }
    addrs
}

/// The HTTP client resolves through the guard: it gets the addresses [`Guard::check`]
/// pinned, or (should a pin have lapsed in between) addresses checked just now.
pub(crate) struct ClientResolver(pub(crate) Arc<Guard>);

impl reqwest::dns::Resolve for ClientResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.0);
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            // reqwest puts the URL's port on every address.
            let addrs = guard
                .addresses(&host, 0)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Resolves from a table; counts lookups. Sends nothing anywhere.
    pub(crate) struct Table(pub HashMap<&'static str, Vec<&'static str>>, pub AtomicUsize);

    impl HostResolver for Table {
        fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            let found = self.0.get(host).map(|ips| {
                ips.iter()
                    .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
                    .collect::<Vec<_>>()
            });
            Box::pin(async move {
                found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
            })
        }
    }

    fn guard() -> (Guard, Arc<Table>) {
        let table = Arc::new(Table(
            HashMap::from([
                ("push.example.com", vec!["93.184.216.34"]),
                ("rebind.example.com", vec!["93.184.216.34", "10.0.0.7"]),
                ("internal.example.com", vec!["192.168.1.10"]),
                ("metadata.example.com", vec!["169.254.169.254"]),
                ("v6local.example.com", vec!["fd00::5"]),
            ]),
            AtomicUsize::new(0),
        ));
        (Guard::new(EndpointPolicy::strict(), table.clone()), table)
    }

    #[tokio::test]
    async fn resolved_addresses_are_checked_and_pinned() {
        let (g, table) = guard();
        assert!(g.check("https://push.example.com/x").await.is_ok());
        assert!(g.check("https://PUSH.example.com/y").await.is_ok());
        assert_eq!(
            table.1.load(Ordering::Relaxed),
            1,
            "the second check used the pin"
        );
        for (host, kind) in [
            ("rebind.example.com", "private"),
            ("internal.example.com", "private"),
            ("metadata.example.com", "link-local"),
            ("v6local.example.com", "unique-local"),
        ] {
            let e = g
                .check(&format!("https://{host}/x"))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "web push endpoint refused: host resolves to a {kind} address"
                )),
                "{host}: {e}"
            );
        }
        assert_eq!(
            g.check("https://nowhere.example.com/x").await,
            Err(Refusal::Dns("entity not found".into()))
        );
        // What the HTTP client gets: the pinned addresses, not a fresh answer.
        let addrs: Vec<_> =
            reqwest::dns::Resolve::resolve(&ClientResolver(Arc::new(g)), "push.example.com".parse().unwrap())
                .await
                .unwrap()
                .collect();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse::<SocketAddr>().unwrap()]);
    }
}
