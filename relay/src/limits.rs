//! Abuse limits on the gRPC side: request rates per client IP and per account, the
//! caps on parked long-polls, and the cap on open connections.
//!
//! Every refusal is `RESOURCE_EXHAUSTED` with a retry hint in two forms: the standard
//! `google.rpc.RetryInfo` in the status details (`grpc-status-details-bin`), and a
//! `retry-after-ms` metadata entry; the message names the limit and the delay too.
//!
//! Rates are keyed GCRA limiters ([`governor`]); idle keys are dropped every
//! [`JANITOR_INTERVAL`] so memory follows the number of recently active keys, not of
//! every key ever seen.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota,
    clock::{Clock as _, DefaultClock},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, PollSemaphore};
use tonic::{Code, Status, metadata::MetadataMap, transport::server::Connected};
use tonic_types::{ErrorDetails, StatusExt};

use crate::config::{IpBlock, Limits, Ohttp, RateLimits};

/// How often idle rate-limit keys are dropped.
pub const JANITOR_INTERVAL: Duration = Duration::from_secs(10);
/// The retry hint of a refused long-poll: by then a parked call has likely ended.
const LONG_POLL_RETRY: Duration = Duration::from_secs(1);
/// Metadata key of the retry hint, in milliseconds, for clients that do not read details.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The rate-limited calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Store (a public deposit or an owner Store).
    Store,
    /// Retrieve.
    Retrieve,
    /// Subscribe and Unsubscribe.
    Subscribe,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Store => "Store",
            Op::Retrieve => "Retrieve",
            Op::Subscribe => "Subscribe",
        }
    }
}

/// Whose budget an account-keyed call spends: Stores into public namespaces (anyone's
/// deposits) and the owner's own signed calls are counted apart, so deposit spam never
/// uses up the owner's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spender {
    /// An unsigned deposit into a public namespace.
    Anyone,
    /// A call signed by the account's owner.
    Owner,
}

type AccountKey = ([u8; 32], bool);

struct Limiter<K: std::hash::Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
    per_s: u32,
    burst: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(per_s: u32, burst: u32) -> Self {
        // Validation keeps both at least 1; `MIN` only guards a config built in code.
        let rate = NonZeroU32::new(per_s).unwrap_or(NonZeroU32::MIN);
        let size = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(size)),
            per_s,
            burst,
        }
    }

    /// `Err(wait)` when the key is over its rate.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.inner
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn tidy(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

/// Marks a request that came in through the OHTTP gateway (`crate::ohttp`), whose peer
/// is the OHTTP relay that forwarded it. Only such a request from a listed relay
/// (`ohttp.relays`) spends that relay's own, larger per-IP budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughOhttp;

/// The per-IP budgets of the listed OHTTP relays: each per-IP quota times
/// `ohttp.relay_rate_factor`, kept apart from the per-IP budgets of direct clients.
struct RelayBudget {
    relays: Vec<IpBlock>,
    store: Limiter<IpAddr>,
    retrieve: Limiter<IpAddr>,
    subscribe: Limiter<IpAddr>,
}

impl RelayBudget {
    fn new(rates: &RateLimits, ohttp: &Ohttp) -> Self {
        let times = |n: u32| n.saturating_mul(ohttp.relay_rate_factor);
        let limiter = |per_s, burst| Limiter::new(times(per_s), times(burst));
        Self {
            relays: ohttp.relay_blocks(),
            store: limiter(rates.store_per_ip_per_s, rates.store_per_ip_burst),
            retrieve: limiter(rates.retrieve_per_ip_per_s, rates.retrieve_per_ip_burst),
            subscribe: limiter(rates.subscribe_per_ip_per_s, rates.subscribe_per_ip_burst),
        }
    }

    /// The budget of `op` when `ip` is a listed relay and the request came through the gateway.
    fn limiter<T>(&self, op: Op, ip: IpAddr, request: &tonic::Request<T>) -> Option<&Limiter<IpAddr>> {
        let relayed = request.extensions().get::<ThroughOhttp>().is_some()
            && self.relays.iter().any(|b| b.contains(ip));
        relayed.then_some(match op {
            Op::Store => &self.store,
            Op::Retrieve => &self.retrieve,
            Op::Subscribe => &self.subscribe,
        })
    }

    fn tidy(&self) {
        self.store.tidy();
        self.retrieve.tidy();
        self.subscribe.tidy();
    }

    fn keys(&self) -> usize {
        self.store.inner.len() + self.retrieve.inner.len() + self.subscribe.inner.len()
    }
}

/// The per-IP and per-account rate limiters of every limited call.
pub struct RateLimiter {
    settings: RateLimits,
    trusted: Vec<IpBlock>,
    ohttp_relays: RelayBudget,
    store_ip: Limiter<IpAddr>,
    store_account: Limiter<AccountKey>,
    retrieve_ip: Limiter<IpAddr>,
    retrieve_account: Limiter<AccountKey>,
    subscribe_ip: Limiter<IpAddr>,
    subscribe_account: Limiter<AccountKey>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.settings.enabled)
            .field("keys", &self.keys())
            .finish()
    }
}

impl RateLimiter {
    /// Limiters with the configured quotas (no OHTTP relay listed).
    pub fn new(settings: &RateLimits) -> Self {
        Self::with_ohttp(settings, &Ohttp::default())
    }

    /// Limiters with the configured quotas, and the budgets of the OHTTP relays `ohttp` lists.
    pub fn with_ohttp(settings: &RateLimits, ohttp: &Ohttp) -> Self {
        let s = settings;
        Self {
            trusted: s.trusted_blocks(),
            ohttp_relays: RelayBudget::new(s, ohttp),
            store_ip: Limiter::new(s.store_per_ip_per_s, s.store_per_ip_burst),
            store_account: Limiter::new(s.store_per_account_per_s, s.store_per_account_burst),
            retrieve_ip: Limiter::new(s.retrieve_per_ip_per_s, s.retrieve_per_ip_burst),
            retrieve_account: Limiter::new(s.retrieve_per_account_per_s, s.retrieve_per_account_burst),
            subscribe_ip: Limiter::new(s.subscribe_per_ip_per_s, s.subscribe_per_ip_burst),
            subscribe_account: Limiter::new(s.subscribe_per_account_per_s, s.subscribe_per_account_burst),
            settings: settings.clone(),
        }
    }

    /// Spends one call of the client IP's budget for `op`. Call it first, before any
    /// signature check, so floods are refused cheaply.
    pub fn check_ip<T>(&self, op: Op, request: &tonic::Request<T>) -> Result<(), Status> {
        if !self.settings.enabled {
            return Ok(());
        }
        let Some(ip) = self.client_ip(request.remote_addr().map(|a| a.ip()), request.metadata()) else {
            // No peer address (an in-process transport): nothing to key on.
            return Ok(());
        };
        if self.settings.exempt_loopback && ip.is_loopback() {
            return Ok(());
        }
        let relay = self.ohttp_relays.limiter(op, ip, request);
        let limiter = relay.unwrap_or(match op {
            Op::Store => &self.store_ip,
            Op::Retrieve => &self.retrieve_ip,
            Op::Subscribe => &self.subscribe_ip,
        });
        let whose = if relay.is_some() {
            "through your OHTTP relay"
        } else {
            "from your IP address"
        };
        limiter.check(&ip_key(ip)).map_err(|wait| {
            exhausted(
                format!(
                    "{}: too many calls {whose} ({}/s, bursts of {})",
                    op.name(),
                    limiter.per_s,
                    limiter.burst
                ),
                wait,
            )
        })
    }

    /// Spends one call of `account`'s budget for `op`. For signed calls, call it after
    /// the signature check, so nobody can spend someone else's budget.
    pub fn check_account(&self, op: Op, account: &[u8; 32], spender: Spender) -> Result<(), Status> {
        if !self.settings.enabled {
            return Ok(());
        }
        let limiter = match op {
            Op::Store => &self.store_account,
            Op::Retrieve => &self.retrieve_account,
            Op::Subscribe => &self.subscribe_account,
        };
        limiter
            .check(&(*account, spender == Spender::Owner))
            .map_err(|wait| {
                let whose = match (op, spender) {
                    (Op::Store, Spender::Anyone) => "deposits into this mailbox",
                    _ => "calls for this account",
                };
                exhausted(
                    format!(
                        "{}: too many {whose} ({}/s, bursts of {})",
                        op.name(),
                        limiter.per_s,
                        limiter.burst
                    ),
                    wait,
                )
            })
    }

    /// The client's IP: the peer's, or, when the peer is a trusted proxy, the last
    /// address in `client_ip_header` that is not itself a trusted proxy (each proxy
    /// appends the address it saw, so earlier entries are the client's to forge).
    pub fn client_ip(&self, peer: Option<IpAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let from_header = metadata
            .get_all(self.settings.client_ip_header.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|entry| parse_forwarded_ip(entry.trim()))
            .collect::<Vec<_>>();
        Some(
            from_header
                .into_iter()
                .rev()
                .find(|ip| !self.is_trusted(*ip))
                .unwrap_or(peer),
        )
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|b| b.contains(ip))
    }

    /// Drops keys whose budget is full again (they would start afresh anyway).
    pub fn tidy(&self) {
        self.store_ip.tidy();
        self.store_account.tidy();
        self.retrieve_ip.tidy();
        self.retrieve_account.tidy();
        self.subscribe_ip.tidy();
        self.subscribe_account.tidy();
        self.ohttp_relays.tidy();
    }

    /// How many keys the limiters hold.
    pub fn keys(&self) -> usize {
        self.store_ip.inner.len()
            + self.store_account.inner.len()
            + self.retrieve_ip.inner.len()
            + self.retrieve_account.inner.len()
            + self.subscribe_ip.inner.len()
            + self.subscribe_account.inner.len()
            + self.ohttp_relays.keys()
    }

    /// Tidies every [`JANITOR_INTERVAL`] until `stop`.
    pub fn spawn_janitor(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(JANITOR_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => me.tidy(),
                }
            }
        })
    }
}

/// An IPv4 address as is (also when IPv4-mapped); an IPv6 address as its /64, since one
/// subscriber usually holds a whole /64.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:443`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// `RESOURCE_EXHAUSTED` with the retry hint in the message, in `RetryInfo` and in the
/// `retry-after-ms` metadata.
pub fn exhausted(what: String, retry: Duration) -> Status {
    // Whole milliseconds, never 0: "retry in 0 ms" invites a tight loop.
    let ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX).max(1);
    let retry = Duration::from_millis(ms);
    let mut status = Status::with_error_details(
        Code::ResourceExhausted,
        format!("{what}; retry in {ms} ms"),
        ErrorDetails::with_retry_info(Some(retry)),
    );
    if let Ok(v) = ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_MS, v);
    }
    status
}

/// The caps on parked long-polls: over the node and per account.
#[derive(Debug)]
pub struct LongPollSlots {
    max: usize,
    max_per_account: usize,
    parked: AtomicUsize,
    per_account: Mutex<HashMap<[u8; 32], usize>>,
}

impl LongPollSlots {
    /// Slots as `[limits]` allows.
    pub fn new(limits: &Limits) -> Self {
        Self {
            max: limits.max_long_polls as usize,
            max_per_account: limits.max_long_polls_per_account as usize,
            parked: AtomicUsize::new(0),
            per_account: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one parked long-poll of `account`, held until the guard drops; or
    /// `RESOURCE_EXHAUSTED` when the node or the account has all it may have.
    pub fn park(self: &Arc<Self>, account: &[u8; 32]) -> Result<ParkedSlot, Status> {
        let mut map = lock(&self.per_account);
        let mine = map.get(account).copied().unwrap_or(0);
        if mine >= self.max_per_account {
            return Err(exhausted(
                format!(
                    "Retrieve: this account already has {} long-polls waiting (the most it may have); \
                     retry later or retrieve without wait_ms",
                    self.max_per_account
                ),
                LONG_POLL_RETRY,
            ));
        }
        // Under the map's lock, so two calls cannot both take the last slot.
        if self.parked.load(Ordering::Acquire) >= self.max {
            return Err(exhausted(
                format!(
                    "Retrieve: the relay has {} long-polls waiting (the most it takes); \
                     retry later or retrieve without wait_ms",
                    self.max
                ),
                LONG_POLL_RETRY,
            ));
        }
        self.parked.fetch_add(1, Ordering::AcqRel);
        map.insert(*account, mine + 1);
        Ok(ParkedSlot {
            slots: Arc::clone(self),
            account: *account,
        })
    }

    /// Long-polls parked now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }
}

/// A poisoned lock only means a panic elsewhere while holding it; each critical section
/// leaves the map consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One parked long-poll's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ParkedSlot {
    slots: Arc<LongPollSlots>,
    account: [u8; 32],
}

impl Drop for ParkedSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.slots.per_account);
        if let Some(n) = map.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.account);
            }
        }
        self.slots.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request guards the gRPC services share.
#[derive(Debug)]
pub struct Guards {
    /// Per-IP and per-account rates.
    pub rates: Arc<RateLimiter>,
    /// Long-poll caps.
    pub long_polls: Arc<LongPollSlots>,
}

impl Guards {
    /// Guards as the configuration says.
    pub fn new(limits: &Limits, rates: &RateLimits) -> Self {
        Self::with_ohttp(limits, rates, &Ohttp::default())
    }

    /// Guards as the configuration says, with the budgets of the listed OHTTP relays.
    pub fn with_ohttp(limits: &Limits, rates: &RateLimits, ohttp: &Ohttp) -> Self {
        Self {
            rates: Arc::new(RateLimiter::with_ohttp(rates, ohttp)),
            long_polls: Arc::new(LongPollSlots::new(limits)),
        }
    }
}

/// Accepted connections, at most `max` open at once: beyond it the stream stops taking
/// connections from the listener (they wait in the kernel's backlog) until one closes.
pub struct CappedIncoming<S> {
    inner: S,
    slots: PollSemaphore,
    held: Option<OwnedSemaphorePermit>,
}

impl<S> CappedIncoming<S> {
    /// Caps `incoming` at `max` open connections.
    pub fn new(incoming: S, max: usize) -> Self {
        Self {
            inner: incoming,
            slots: PollSemaphore::new(Arc::new(Semaphore::new(max.max(1)))),
            held: None,
        }
    }
}

impl<S, IO, E> Stream for CappedIncoming<S>
where
    S: Stream<Item = Result<IO, E>> + Unpin,
{
    type Item = Result<CappedConnection<IO>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = &mut *self;
        if me.held.is_none() {
            match ready!(me.slots.poll_acquire(cx)) {
                Some(permit) => me.held = Some(permit),
                // The semaphore is ours and never closed.
                None => return Poll::Ready(None),
            }
        }
        match ready!(Pin::new(&mut me.inner).poll_next(cx)) {
            Some(Ok(io)) => {
                let permit = me.held.take();
                Poll::Ready(Some(Ok(CappedConnection { io, _slot: permit })))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }
}

/// A connection holding one of the [`CappedIncoming`] slots until it is dropped.
pub struct CappedConnection<IO> {
    io: IO,
    _slot: Option<OwnedSemaphorePermit>,
}

impl<IO: Connected> Connected for CappedConnection<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CappedConnection<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CappedConnection<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn settings() -> RateLimits {
        RateLimits {
            exempt_loopback: false,
            store_per_ip_per_s: 1,
            store_per_ip_burst: 2,
            store_per_account_per_s: 1,
            store_per_account_burst: 1,
            trusted_proxies: vec!["10.0.0.0/8".into()],
            ..RateLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_ip_comes_from_the_header_only_behind_a_trusted_proxy() {
        let r = RateLimiter::new(&settings());
        let mut md = MetadataMap::new();
        md.insert(
            "x-forwarded-for",
            MetadataValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.9"),
        );
        assert_eq!(r.client_ip(Some(ip("10.1.1.1")), &md), Some(ip("1.2.3.4")));
        assert_eq!(r.client_ip(Some(ip("8.8.8.8")), &md), Some(ip("8.8.8.8")));
        assert_eq!(
            r.client_ip(Some(ip("10.1.1.1")), &MetadataMap::new()),
            Some(ip("10.1.1.1"))
        );
        md.insert("x-forwarded-for", MetadataValue::from_static("[2001:db8::1]:443"));
        assert_eq!(r.client_ip(Some(ip("10.1.1.1")), &md), Some(ip("2001:db8::1")));
        assert_eq!(r.client_ip(None, &md), None);
    }

    #[test]
    fn a_listed_ohttp_relay_has_its_own_larger_budget_only_through_the_gateway() {
        let ohttp = Ohttp {
            relays: vec!["192.0.2.0/24".into()],
            relay_rate_factor: 3,
            ..Ohttp::default()
        };
        let r = RateLimiter::with_ohttp(&settings(), &ohttp);
        let from = |peer: &str, relayed: bool| {
            let mut req = tonic::Request::new(());
            req.extensions_mut()
                .insert(tonic::transport::server::TcpConnectInfo {
                    local_addr: None,
                    remote_addr: Some(std::net::SocketAddr::new(ip(peer), 443)),
                });
            if relayed {
                req.extensions_mut().insert(ThroughOhttp);
            }
            req
        };
        // Burst 2 per IP, times 3 for the relay.
        let relayed = from("192.0.2.7", true);
        for _ in 0..6 {
            assert!(r.check_ip(Op::Store, &relayed).is_ok());
        }
        let refused = r.check_ip(Op::Store, &relayed).unwrap_err();
        assert!(
            refused.message().contains("through your OHTTP relay"),
            "{}",
            refused.message()
        );
        // The same address connecting directly spends the ordinary budget, untouched so far.
        let direct = from("192.0.2.7", false);
        assert!(r.check_ip(Op::Store, &direct).is_ok());
        assert!(r.check_ip(Op::Store, &direct).is_ok());
        let refused = r.check_ip(Op::Store, &direct).unwrap_err();
        assert!(
            refused.message().contains("from your IP address"),
            "{}",
            refused.message()
        );
        // Through the gateway from an unlisted address: the ordinary budget.
        let unlisted = from("198.51.100.1", true);
        assert!(r.check_ip(Op::Store, &unlisted).is_ok());
        assert!(r.check_ip(Op::Store, &unlisted).is_ok());
        assert!(r.check_ip(Op::Store, &unlisted).is_err());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_slash_64() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
    }

    #[test]
    fn accounts_run_out_and_deposits_are_counted_apart_from_the_owner() {
        let r = RateLimiter::new(&settings());
        let a = [1; 32];
        assert!(r.check_account(Op::Store, &a, Spender::Anyone).is_ok());
        let refused = r.check_account(Op::Store, &a, Spender::Anyone).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused.message().contains("deposits into this mailbox"),
            "{}",
            refused.message()
        );
        let hint = refused.get_error_details().retry_info().cloned().unwrap();
        assert!(hint.retry_delay.unwrap() > Duration::ZERO);
        assert!(refused.metadata().get(RETRY_AFTER_MS).is_some());
        assert!(
            r.check_account(Op::Store, &a, Spender::Owner).is_ok(),
            "own budget"
        );
        assert!(
            r.check_account(Op::Retrieve, &a, Spender::Owner).is_ok(),
            "other call"
        );
        let off = RateLimiter::new(&RateLimits {
            enabled: false,
            ..settings()
        });
        for _ in 0..10 {
            assert!(off.check_account(Op::Store, &a, Spender::Anyone).is_ok());
        }
    }

    #[test]
    fn long_poll_slots_are_capped_and_freed() {
        let limits = Limits {
            max_long_polls: 3,
            max_long_polls_per_account: 2,
            ..Limits::default()
        };
        let slots = Arc::new(LongPollSlots::new(&limits));
        let one = slots.park(&[1; 32]).unwrap();
        let _two = slots.park(&[1; 32]).unwrap();
        assert_eq!(slots.park(&[1; 32]).unwrap_err().code(), Code::ResourceExhausted);
        let _three = slots.park(&[2; 32]).unwrap();
        let full = slots.park(&[3; 32]).unwrap_err();
        assert!(full.message().contains("the relay has 3"), "{}", full.message());
        drop(one);
        let _four = slots.park(&[3; 32]).unwrap();
        assert_eq!(slots.parked(), 3);
    }

    #[tokio::test]
    async fn capped_incoming_holds_back_connections_over_the_cap() {
        use tokio_stream::StreamExt;
        let items = tokio_stream::iter(vec![Ok::<_, ()>(tokio::io::empty()), Ok(tokio::io::empty())]);
        let mut capped = CappedIncoming::new(items, 1);
        let first = capped.next().await.unwrap().unwrap();
        let second = tokio::time::timeout(Duration::from_millis(50), capped.next()).await;
        assert!(second.is_err(), "the second waits for a free slot");
        drop(first);
        assert!(capped.next().await.unwrap().is_ok());
    }
}
