//! The relay's configuration: a TOML file, `TIDINGS_*` environment overrides, defaults
//! and validation.
//!
//! The shape is DESIGN.md's "Running the relay" plus the `[limits]`, `[sweep]` and
//! `[push]` tables. Unknown keys are errors, and every error names the key it is about
//! (`limits.max_ttl_ms`, `apps[1].apns.key_file`, `listen (from TIDINGS_LISTEN)`), so
//! `check-config` can point an operator at the first bad line.
//!
//! Relative paths written in a config file are relative to the directory of that file;
//! relative paths from the environment or the defaults are relative to the working
//! directory (so `serve` without arguments uses `./tidings-data`).

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// Prefix of the environment variables that override top-level settings.
pub const ENV_PREFIX: &str = "TIDINGS_";

/// The top-level settings that the environment may override, as `TIDINGS_` + upper-cased key.
pub const ENV_KEYS: &[&str] = &["listen", "admin_listen", "data_dir", "tls_cert", "tls_key"];

/// Name of the relay secret inside `data_dir`.
pub const RELAY_KEY_FILE: &str = "relay.key";

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Largest message size the relay accepts to configure (its messages live in one row).
const MESSAGE_BYTES_CEILING: u32 = 16 * 1024 * 1024;

/// The whole relay configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address of the HTTP admin endpoints `/healthz`, `/readyz` (and later `/metrics`).
    pub admin_listen: SocketAddr,
    /// Where the embedded store and the relay key live.
    pub data_dir: PathBuf,
    /// PEM certificate chain; with `tls_key`, gRPC is served over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Which storage backend to use.
    pub storage: Storage,
    /// The apps this relay pushes for (Fast Mode).
    pub apps: Vec<App>,
    /// Request limits and message lifetimes.
    pub limits: Limits,
    /// Per client IP and per account request rates.
    pub rate_limits: RateLimits,
    /// The background sweep of expired messages.
    pub sweep: Sweep,
    /// Push delivery tuning (Fast Mode).
    pub push: Push,
    /// Which Web Push endpoints the relay may reach.
    pub webpush: WebPushPolicy,
    /// The Oblivious HTTP gateway (RFC 9458), off by default.
    pub ohttp: Ohttp,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            data_dir: PathBuf::from("./tidings-data"),
            tls_cert: None,
            tls_key: None,
            storage: Storage::default(),
            apps: Vec::new(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            sweep: Sweep::default(),
            push: Push::default(),
            webpush: WebPushPolicy::default(),
            ohttp: Ohttp::default(),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// `embedded` (redb in `data_dir`, the default) or `postgres`.
    pub backend: Backend,
    /// Connection URL, required for `backend = "postgres"`.
    pub postgres_url: Option<String>,
    /// The embedded store's page cache, in MiB: what bounds the relay's memory besides
    /// its connections. redb's own default (1 GiB) would grow a long-running relay's
    /// RSS to that; pages beyond the cache are read from the OS page cache.
    pub cache_mb: u32,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backend: Backend::default(),
            postgres_url: None,
            cache_mb: DEFAULT_CACHE_MB,
        }
    }
}

/// Default of `storage.cache_mb`.
pub const DEFAULT_CACHE_MB: u32 = 128;
const MIN_CACHE_MB: u32 = 8;
const MAX_CACHE_MB: u32 = 1 << 20;

/// The storage backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// redb in `data_dir`.
    #[default]
    Embedded,
    /// PostgreSQL at `postgres_url`, shared by several relay nodes.
    Postgres,
}

/// One `[[apps]]` entry: an app the relay delivers pushes for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The app id clients name in their sealed registration.
    pub id: String,
    /// The push services Subscribe accepts for this app; each needs its table. Absent:
    /// every service whose table is present.
    #[serde(default)]
    pub services: Option<Vec<ServiceName>>,
    /// APNs credentials, for iOS devices.
    pub apns: Option<Apns>,
    /// FCM credentials, for Android devices.
    pub fcm: Option<Fcm>,
    /// The VAPID key, for Web Push (UnifiedPush distributors, browsers).
    #[serde(default)]
    pub webpush: Option<WebPushApp>,
    /// Huawei Push Kit credentials.
    #[serde(default)]
    pub hms: Option<Hms>,
}

/// A push service, as `apps[].services` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    /// APNs (production and sandbox).
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
    /// Web Push.
    Webpush,
    /// Huawei Push Kit.
    Hms,
}

impl ServiceName {
    /// Every service, in the order the config documents them.
    pub const ALL: [ServiceName; 4] = [Self::Apns, Self::Fcm, Self::Webpush, Self::Hms];

    /// The name in the config (and the table's key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
            Self::Webpush => "webpush",
            Self::Hms => "hms",
        }
    }
}

impl App {
    /// Whether the app's table for `service` is present.
    pub fn has_table(&self, service: ServiceName) -> bool {
        match service {
            ServiceName::Apns => self.apns.is_some(),
            ServiceName::Fcm => self.fcm.is_some(),
            ServiceName::Webpush => self.webpush.is_some(),
            ServiceName::Hms => self.hms.is_some(),
        }
    }

    /// Whether Subscribe accepts registrations of `service` for this app.
    pub fn accepts(&self, service: ServiceName) -> bool {
        match &self.services {
            Some(list) => list.contains(&service) && self.has_table(service),
            None => self.has_table(service),
        }
    }
}

/// `[apps.webpush]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushApp {
    /// The VAPID private key: P-256, PEM (PKCS#8 or SEC1).
    pub vapid_key_file: PathBuf,
    /// The VAPID `sub` claim: a `mailto:` or `https://` contact push services can reach.
    pub subject: String,
}

/// `[apps.hms]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hms {
    /// The AppGallery Connect app id.
    pub app_id: String,
    /// The OAuth client id; defaults to `app_id`.
    pub client_id: Option<String>,
    /// A file holding the OAuth client secret (the app secret), nothing else.
    pub client_secret_file: PathBuf,
    /// The Push Kit endpoint.
    #[serde(default = "default_hms_endpoint")]
    pub endpoint: String,
    /// The OAuth token endpoint.
    #[serde(default = "default_hms_token_endpoint")]
    pub token_endpoint: String,
    /// An extra trusted root certificate (PEM).
    pub ca_file: Option<PathBuf>,
}

impl Hms {
    /// The OAuth client id in force.
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or(&self.app_id)
    }
}

fn default_hms_endpoint() -> String {
    "https://push-api.cloud.huawei.com".to_owned()
}
fn default_hms_token_endpoint() -> String {
    "https://oauth-login.cloud.huawei.com/oauth2/v3/token".to_owned()
}

/// `[webpush]`: which endpoints clients may register. By default only `https://`
/// endpoints on public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebPushPolicy {
    /// Also accept `http://` endpoints (a distributor on a trusted network, tests).
    pub allow_http: bool,
    /// Host names whose addresses are not checked (an internal distributor).
    pub allow_hosts: Vec<String>,
    /// Addresses or CIDR blocks endpoints may resolve to although they are loopback,
    /// private, link-local, CGNAT, multicast or unique-local.
    pub allow_networks: Vec<String>,
    /// An extra trusted root certificate (PEM) for Web Push endpoints.
    pub ca_file: Option<PathBuf>,
}

impl WebPushPolicy {
    /// The allow-list as the senders apply it (call after validation; bad entries are
    /// skipped).
    pub fn endpoint_policy(&self) -> crate::push::EndpointPolicy {
        let networks = self
            .allow_networks
            .iter()
            .filter_map(|e| IpBlock::parse(e).ok())
            .collect();
        crate::push::EndpointPolicy::new(self.allow_http, &self.allow_hosts, networks)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (i, entry) in self.allow_networks.iter().enumerate() {
            IpBlock::parse(entry)
                .map_err(|rule| ConfigError::invalid(format!("webpush.allow_networks[{i}]"), rule))?;
        }
        for (i, host) in self.allow_hosts.iter().enumerate() {
            let ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':');
            if !ok {
                return Err(ConfigError::invalid(
                    format!("webpush.allow_hosts[{i}]"),
                    format!("must be a host name or IP address (got {host:?})"),
                ));
            }
        }
        if let Some(ca) = &self.ca_file {
            readable("webpush.ca_file", ca)?;
        }
        Ok(())
    }
}

/// `[apps.apns]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apns {
    /// The `.p8` token-auth key.
    pub key_file: PathBuf,
    /// Its 10-character key id.
    pub key_id: String,
    /// The Apple developer team id.
    pub team_id: String,
    /// The `apns-topic` (the app's bundle id).
    pub topic: String,
    /// Production endpoint.
    #[serde(default = "default_apns_endpoint")]
    pub endpoint: String,
    /// Sandbox endpoint, for `APNS_SANDBOX` registrations.
    #[serde(default = "default_apns_sandbox_endpoint")]
    pub sandbox_endpoint: String,
    /// An extra trusted root certificate (PEM).
    pub ca_file: Option<PathBuf>,
}

/// `[apps.fcm]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fcm {
    /// The Google service-account JSON (its `token_uri` is honoured).
    pub service_account_file: PathBuf,
    /// The FCM HTTP v1 endpoint.
    #[serde(default = "default_fcm_endpoint")]
    pub endpoint: String,
    /// An extra trusted root certificate (PEM).
    pub ca_file: Option<PathBuf>,
}

fn default_apns_endpoint() -> String {
    "https://api.push.apple.com".to_owned()
}
fn default_apns_sandbox_endpoint() -> String {
    "https://api.sandbox.push.apple.com".to_owned()
}
fn default_fcm_endpoint() -> String {
    "https://fcm.googleapis.com".to_owned()
}

/// `[limits]`: what a request may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest `data` of a Store.
    pub max_message_bytes: u32,
    /// Byte budget of one Retrieve answer (a page stops early, with `more`, beyond it),
    /// so clients with gRPC's default 4 MiB receive limit can read any page.
    pub max_response_bytes: u32,
    /// TTL of a Store with `ttl_ms = 0`.
    pub default_ttl_ms: i64,
    /// Longest TTL.
    pub max_ttl_ms: i64,
    /// Shortest nonzero TTL.
    pub min_ttl_ms: i64,
    /// How far a signed `ts` may be from the relay's clock, in seconds.
    pub clock_window_s: i64,
    /// Longest long-poll.
    pub max_wait_ms: u32,
    /// Page size of a Retrieve with `limit = 0`.
    pub default_limit: u32,
    /// Largest `limit`.
    pub max_limit: u32,
    /// Most hashes in one Delete.
    pub max_delete_hashes: u32,
    /// How long a push subscription lives without renewal.
    pub subscription_ttl_ms: i64,
    /// Most unexpired messages in one mailbox (account, namespace); a Store into a full
    /// mailbox is refused until the owner deletes or messages expire.
    pub max_messages_per_mailbox: u32,
    /// Most long-polls parked at once on this node.
    pub max_long_polls: u32,
    /// Most long-polls parked at once for one account on this node.
    pub max_long_polls_per_account: u32,
    /// Most open gRPC connections; beyond it the relay stops accepting until one closes.
    pub max_connections: u32,
    /// Most calls in flight on one connection; more wait for one to finish.
    pub max_requests_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_response_bytes: 4_000_000,
            default_ttl_ms: 14 * DAY_MS,
            max_ttl_ms: 30 * DAY_MS,
            min_ttl_ms: 10_000,
            clock_window_s: 300,
            max_wait_ms: 60_000,
            default_limit: 100,
            max_limit: 1000,
            max_delete_hashes: 1000,
            subscription_ttl_ms: 30 * DAY_MS,
            max_messages_per_mailbox: 10_000,
            max_long_polls: 100_000,
            max_long_polls_per_account: 64,
            max_connections: 16_384,
            max_requests_per_connection: 1024,
        }
    }
}

/// `[rate_limits]`: request rates per client IP and per account (GCRA: a sustained
/// `*_per_s` with bursts of up to `*_burst` calls).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Turns every rate limit off (the caps in `[limits]` still apply).
    pub enabled: bool,
    /// Requests whose client IP is a loopback address are not limited per IP (a reverse
    /// proxy on the same host would otherwise make all its clients one IP).
    pub exempt_loopback: bool,
    /// Peers (IP addresses or CIDR blocks) whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<String>,
    /// Header naming the client IP when the peer is a trusted proxy.
    pub client_ip_header: String,
    /// Stores per client IP.
    pub store_per_ip_per_s: u32,
    /// Burst of Stores per client IP.
    pub store_per_ip_burst: u32,
    /// Stores per target mailbox owner (public deposits and owner Stores counted apart).
    pub store_per_account_per_s: u32,
    /// Burst of Stores per target account.
    pub store_per_account_burst: u32,
    /// Retrieves per client IP.
    pub retrieve_per_ip_per_s: u32,
    /// Burst of Retrieves per client IP.
    pub retrieve_per_ip_burst: u32,
    /// Retrieves per account (signed, so only the owner spends it).
    pub retrieve_per_account_per_s: u32,
    /// Burst of Retrieves per account.
    pub retrieve_per_account_burst: u32,
    /// Subscribes (and Unsubscribes) per client IP.
    pub subscribe_per_ip_per_s: u32,
    /// Burst of Subscribes per client IP.
    pub subscribe_per_ip_burst: u32,
    /// Subscribes (and Unsubscribes) per account.
    pub subscribe_per_account_per_s: u32,
    /// Burst of Subscribes per account.
    pub subscribe_per_account_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            exempt_loopback: true,
            trusted_proxies: Vec::new(),
            client_ip_header: "x-forwarded-for".to_owned(),
            store_per_ip_per_s: 200,
            store_per_ip_burst: 2000,
            store_per_account_per_s: 30,
            store_per_account_burst: 300,
            retrieve_per_ip_per_s: 200,
            retrieve_per_ip_burst: 2000,
            retrieve_per_account_per_s: 30,
            retrieve_per_account_burst: 300,
            subscribe_per_ip_per_s: 10,
            subscribe_per_ip_burst: 100,
            subscribe_per_account_per_s: 2,
            subscribe_per_account_burst: 50,
        }
    }
}

impl RateLimits {
    /// Every rate is positive, every proxy entry parses, the header is a header name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rates = [
            ("store_per_ip_per_s", self.store_per_ip_per_s),
            ("store_per_ip_burst", self.store_per_ip_burst),
            ("store_per_account_per_s", self.store_per_account_per_s),
            ("store_per_account_burst", self.store_per_account_burst),
            ("retrieve_per_ip_per_s", self.retrieve_per_ip_per_s),
            ("retrieve_per_ip_burst", self.retrieve_per_ip_burst),
            ("retrieve_per_account_per_s", self.retrieve_per_account_per_s),
            ("retrieve_per_account_burst", self.retrieve_per_account_burst),
            ("subscribe_per_ip_per_s", self.subscribe_per_ip_per_s),
            ("subscribe_per_ip_burst", self.subscribe_per_ip_burst),
            ("subscribe_per_account_per_s", self.subscribe_per_account_per_s),
            ("subscribe_per_account_burst", self.subscribe_per_account_burst),
        ];
        for (key, value) in rates {
            in_range(&format!("rate_limits.{key}"), i64::from(value), 1, 1_000_000)?;
        }
        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            IpBlock::parse(entry)
                .map_err(|rule| ConfigError::invalid(format!("rate_limits.trusted_proxies[{i}]"), rule))?;
        }
        if http::HeaderName::from_bytes(self.client_ip_header.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                "rate_limits.client_ip_header",
                format!("must be an HTTP header name (got {:?})", self.client_ip_header),
            ));
        }
        Ok(())
    }

    /// The parsed `trusted_proxies` (call after [`RateLimits::validate`]; bad entries
    /// are skipped).
    pub fn trusted_blocks(&self) -> Vec<IpBlock> {
        self.trusted_proxies
            .iter()
            .filter_map(|e| IpBlock::parse(e).ok())
            .collect()
    }
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("must be an IP address or CIDR block (got {text:?})"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length must be 0..={max} (got {text:?})"))?,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        // A /0 block holds everything (and `>> 128` would overflow).
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// `[sweep]`: the background removal of expired messages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sweep {
    /// Pause between sweeps.
    pub interval_ms: u64,
    /// Most rows removed in one store call, so a sweep never holds a long write.
    pub batch: u32,
}

impl Default for Sweep {
    fn default() -> Self {
        Self {
            interval_ms: 30_000,
            batch: 1000,
        }
    }
}

/// `[push]`: push delivery tuning (used by the Fast Mode notifier).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Push {
    /// Deliveries in flight at once.
    pub concurrency: u32,
    /// How long a claimed job stays leased to this node.
    pub lease_ms: i64,
    /// Give up on a job enqueued longer ago than this.
    pub max_age_ms: i64,
    /// Bound on one provider request, connect to answer.
    pub timeout_ms: u64,
    /// Look for due jobs (retries, other nodes' stores) at least this often.
    pub poll_interval_ms: u64,
    /// Title of alert pushes, shown only if the app's extension cannot decrypt them.
    pub alert_title: String,
    /// Body of alert pushes, shown only if the app's extension cannot decrypt them.
    pub alert_body: String,
    /// Consecutive transient failures (timeouts, 5xx, 429, connection errors) of one
    /// app's provider after which its circuit breaker opens.
    pub breaker_failures: u32,
    /// How long an open breaker defers that app's pushes to that provider before one
    /// probe is let through.
    pub breaker_cooldown_ms: u64,
    /// Most deliveries in flight to one (app, provider); 0 means half of `concurrency`
    /// (at least 1), so a hanging provider leaves the other half to the rest.
    pub max_in_flight_per_provider: u32,
}

impl Default for Push {
    fn default() -> Self {
        Self {
            concurrency: 256,
            lease_ms: 30_000,
            max_age_ms: DAY_MS,
            timeout_ms: 10_000,
            poll_interval_ms: 1_000,
            alert_title: String::new(),
            alert_body: "New message".to_owned(),
            breaker_failures: 5,
            breaker_cooldown_ms: 5_000,
            max_in_flight_per_provider: 0,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a value the relay does not accept (or is not a key at all).
    #[error("`{key}`: {rule}")]
    Invalid {
        /// Dotted path of the key, e.g. `limits.max_ttl_ms` or `apps[0].apns.key_file`.
        key: String,
        /// The rule it breaks.
        rule: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            rule: rule.into(),
        }
    }

    /// The offending key, when the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Loads the configuration `serve` runs with: the file (if any), then the process
    /// environment's `TIDINGS_*` overrides, then validation.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        match path {
            None => Self::from_toml("", Path::new(""), env),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let base = path.parent().unwrap_or(Path::new(""));
                Self::from_toml(&text, base, env).map_err(|e| match e {
                    ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                        path: path.to_owned(),
                        message,
                    },
                    other => other,
                })
            }
        }
    }

    /// Parses `text`, applies the overrides `env` returns (called with `TIDINGS_LISTEN`
    /// etc.), resolves the file's relative paths against `base_dir`, and validates.
    pub fn from_toml(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        // Paths written in the file are relative to the file; resolve them before the
        // environment adds its own (which are relative to the working directory).
        let in_file: HashSet<String> = table.keys().cloned().collect();
        let mut from_env = HashSet::new();
        for key in ENV_KEYS {
            if let Some(value) = env(&env_name(key)) {
                table.insert((*key).to_owned(), toml::Value::String(value));
                from_env.insert(*key);
            }
        }
        let mut config: Config = serde_path_to_error::deserialize(table).map_err(|e| {
            let key = e.path().to_string();
            let key = annotate_env(&key, &from_env);
            ConfigError::invalid(key, plain_rule(e.inner().message()))
        })?;
        let written_in_file = |key: &str| in_file.contains(key) && !from_env.contains(key);
        config.resolve_paths(base_dir, written_in_file);
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule that types alone do not: ranges, consistency between limits,
    /// readable files, endpoint schemes, unique app ids.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_addresses()?;
        self.validate_tls()?;
        self.validate_storage()?;
        self.limits.validate()?;
        self.rate_limits.validate()?;
        self.validate_sweep_and_push()?;
        self.webpush.validate()?;
        self.validate_ohttp()?;
        validate_apps(&self.apps)
    }

    /// The relay secret's path.
    pub fn relay_key_path(&self) -> PathBuf {
        self.data_dir.join(RELAY_KEY_FILE)
    }

    /// The app ids, in configuration order.
    pub fn app_ids(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.id.clone()).collect()
    }

    fn resolve_paths(&mut self, base: &Path, written_in_file: impl Fn(&str) -> bool) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if written_in_file("data_dir") {
            resolve(&mut self.data_dir);
        }
        if written_in_file("tls_cert")
            && let Some(p) = self.tls_cert.as_mut()
        {
            resolve(p);
        }
        if written_in_file("tls_key")
            && let Some(p) = self.tls_key.as_mut()
        {
            resolve(p);
        }
        for app in &mut self.apps {
            if let Some(apns) = &mut app.apns {
                resolve(&mut apns.key_file);
                if let Some(p) = apns.ca_file.as_mut() {
                    resolve(p);
                }
            }
            if let Some(fcm) = &mut app.fcm {
                resolve(&mut fcm.service_account_file);
                if let Some(p) = fcm.ca_file.as_mut() {
                    resolve(p);
                }
            }
            if let Some(webpush) = &mut app.webpush {
                resolve(&mut webpush.vapid_key_file);
            }
            if let Some(hms) = &mut app.hms {
                resolve(&mut hms.client_secret_file);
                if let Some(p) = hms.ca_file.as_mut() {
                    resolve(p);
                }
            }
        }
        if let Some(p) = self.webpush.ca_file.as_mut() {
            resolve(p);
        }
    }

    fn validate_addresses(&self) -> Result<(), ConfigError> {
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "admin_listen",
                format!("must differ from listen (both are {})", self.listen),
            ));
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(()),
            (Some(cert), Some(key)) => {
                readable("tls_cert", cert)?;
                readable("tls_key", key)
            }
            (Some(_), None) => Err(ConfigError::invalid("tls_key", "must be set when tls_cert is")),
            (None, Some(_)) => Err(ConfigError::invalid("tls_cert", "must be set when tls_key is")),
        }
    }

    fn validate_storage(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        if !(MIN_CACHE_MB..=MAX_CACHE_MB).contains(&self.storage.cache_mb) {
            return Err(ConfigError::invalid(
                "storage.cache_mb",
                format!("must be within {MIN_CACHE_MB}..={MAX_CACHE_MB}"),
            ));
        }
        match (&self.storage.backend, &self.storage.postgres_url) {
            (Backend::Postgres, None) => Err(ConfigError::invalid(
                "storage.postgres_url",
                "is required when storage.backend = \"postgres\"",
            )),
            (_, Some(url)) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                Err(ConfigError::invalid(
                    "storage.postgres_url",
                    "must start with postgres:// or postgresql://",
                ))
            }
            _ => Ok(()),
        }
    }

    fn validate_sweep_and_push(&self) -> Result<(), ConfigError> {
        at_least("sweep.interval_ms", self.sweep.interval_ms, 10)?;
        at_least("sweep.batch", u64::from(self.sweep.batch), 1)?;
        at_least("push.concurrency", u64::from(self.push.concurrency), 1)?;
        in_range("push.lease_ms", self.push.lease_ms, 1000, 3_600_000)?;
        in_range_u("push.timeout_ms", self.push.timeout_ms, 100, 120_000)?;
        in_range_u("push.poll_interval_ms", self.push.poll_interval_ms, 10, 60_000)?;
        if self.push.lease_ms
            < i64::try_from(self.push.timeout_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(2)
        {
            return Err(ConfigError::invalid(
                "push.lease_ms",
                "must be at least twice push.timeout_ms, so a job is never claimed twice while in flight",
            ));
        }
        at_least("push.breaker_failures", u64::from(self.push.breaker_failures), 1)?;
        in_range_u(
            "push.breaker_cooldown_ms",
            self.push.breaker_cooldown_ms,
            10,
            3_600_000,
        )?;
        in_range(
            "push.max_in_flight_per_provider",
            i64::from(self.push.max_in_flight_per_provider),
            0,
            i64::from(self.push.concurrency),
        )?;
        in_range("push.max_age_ms", self.push.max_age_ms, 1000, 30 * DAY_MS)
    }
}

impl Limits {
    /// The limits must be usable and consistent with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range(
            "limits.max_message_bytes",
            i64::from(self.max_message_bytes),
            1,
            i64::from(MESSAGE_BYTES_CEILING),
        )?;
        let floor = i64::from(self.max_message_bytes) + 1024;
        in_range(
            "limits.max_response_bytes",
            i64::from(self.max_response_bytes),
            floor,
            i64::from(u32::MAX),
        )
        .map_err(|_| {
            ConfigError::invalid(
                "limits.max_response_bytes",
                format!("must be at least limits.max_message_bytes + 1024 ({floor})"),
            )
        })?;
        in_range("limits.min_ttl_ms", self.min_ttl_ms, 1, i64::MAX)?;
        // A century keeps `now + ttl` far from overflow.
        in_range(
            "limits.max_ttl_ms",
            self.max_ttl_ms,
            self.min_ttl_ms,
            36_500 * DAY_MS,
        )?;
        in_range(
            "limits.default_ttl_ms",
            self.default_ttl_ms,
            self.min_ttl_ms,
            self.max_ttl_ms,
        )?;
        in_range("limits.clock_window_s", self.clock_window_s, 1, 86_400)?;
        in_range("limits.max_wait_ms", i64::from(self.max_wait_ms), 0, 600_000)?;
        in_range("limits.max_limit", i64::from(self.max_limit), 1, 100_000)?;
        in_range(
            "limits.default_limit",
            i64::from(self.default_limit),
            1,
            i64::from(self.max_limit),
        )?;
        in_range(
            "limits.max_delete_hashes",
            i64::from(self.max_delete_hashes),
            1,
            100_000,
        )?;
        in_range(
            "limits.subscription_ttl_ms",
            self.subscription_ttl_ms,
            60_000,
            36_500 * DAY_MS,
        )?;
        let caps = [
            ("max_messages_per_mailbox", self.max_messages_per_mailbox),
            ("max_long_polls", self.max_long_polls),
            ("max_long_polls_per_account", self.max_long_polls_per_account),
            ("max_connections", self.max_connections),
            ("max_requests_per_connection", self.max_requests_per_connection),
        ];
        for (key, value) in caps {
            at_least(&format!("limits.{key}"), u64::from(value), 1)?;
        }
        if self.max_long_polls_per_account > self.max_long_polls {
            return Err(ConfigError::invalid(
                "limits.max_long_polls_per_account",
                format!("must be at most limits.max_long_polls ({})", self.max_long_polls),
            ));
        }
        Ok(())
    }

    /// The largest gRPC request the relay decodes: the largest Store or Delete plus
    /// headroom for the other fields, so an oversize request is refused from its
    /// length prefix, before its body is buffered.
    pub fn max_request_bytes(&self) -> usize {
        const HEADROOM: usize = 4096;
        // A hash in a Delete costs 32 bytes plus a 2-byte tag and length.
        let delete = self.max_delete_hashes as usize * 34;
        (self.max_message_bytes as usize).max(delete) + HEADROOM
    }
}

fn validate_apps(apps: &[App]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, app) in apps.iter().enumerate() {
        let at = |key: &str| format!("apps[{i}].{key}");
        if app.id.trim().is_empty() {
            return Err(ConfigError::invalid(at("id"), "must not be empty"));
        }
        if !seen.insert(app.id.as_str()) {
            return Err(ConfigError::invalid(
                at("id"),
                format!("duplicate app id {:?}", app.id),
            ));
        }
        if !ServiceName::ALL.iter().any(|s| app.has_table(*s)) {
            return Err(ConfigError::invalid(
                format!("apps[{i}]"),
                "needs an [apps.apns], [apps.fcm], [apps.webpush] or [apps.hms] table",
            ));
        }
        validate_services(i, app)?;
        if let Some(apns) = &app.apns {
            readable(&at("apns.key_file"), &apns.key_file)?;
            non_empty(&at("apns.key_id"), &apns.key_id)?;
            non_empty(&at("apns.team_id"), &apns.team_id)?;
            non_empty(&at("apns.topic"), &apns.topic)?;
            endpoint(&at("apns.endpoint"), &apns.endpoint)?;
            endpoint(&at("apns.sandbox_endpoint"), &apns.sandbox_endpoint)?;
            if let Some(ca) = &apns.ca_file {
                readable(&at("apns.ca_file"), ca)?;
            }
        }
        if let Some(fcm) = &app.fcm {
            readable(&at("fcm.service_account_file"), &fcm.service_account_file)?;
            endpoint(&at("fcm.endpoint"), &fcm.endpoint)?;
            if let Some(ca) = &fcm.ca_file {
                readable(&at("fcm.ca_file"), ca)?;
            }
        }
        if let Some(webpush) = &app.webpush {
            validate_webpush_app(&at("webpush"), webpush)?;
        }
        if let Some(hms) = &app.hms {
            let ok_id = !hms.app_id.is_empty() && hms.app_id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok_id {
                return Err(ConfigError::invalid(
                    at("hms.app_id"),
                    format!(
                        "must be the AppGallery app id, letters and digits (got {:?})",
                        hms.app_id
                    ),
                ));
            }
            if hms.client_id.as_deref().is_some_and(|c| c.trim().is_empty()) {
                return Err(ConfigError::invalid(at("hms.client_id"), "must not be empty"));
            }
            let secret = std::fs::read_to_string(&hms.client_secret_file).map_err(|e| {
                ConfigError::invalid(
                    at("hms.client_secret_file"),
                    format!("cannot read {}: {e}", hms.client_secret_file.display()),
                )
            })?;
            if secret.trim().is_empty() {
                return Err(ConfigError::invalid(at("hms.client_secret_file"), "is empty"));
            }
            endpoint(&at("hms.endpoint"), &hms.endpoint)?;
            endpoint(&at("hms.token_endpoint"), &hms.token_endpoint)?;
            if let Some(ca) = &hms.ca_file {
                readable(&at("hms.ca_file"), ca)?;
            }
        }
    }
    Ok(())
}

/// `services`: known names (serde checks), no repeats, each with its table, and every
/// table listed.
fn validate_services(i: usize, app: &App) -> Result<(), ConfigError> {
    let Some(list) = &app.services else {
        return Ok(());
    };
    if list.is_empty() {
        return Err(ConfigError::invalid(
            format!("apps[{i}].services"),
            "must name at least one service (or be left out)",
        ));
    }
    for (k, service) in list.iter().enumerate() {
        if list[..k].contains(service) {
            return Err(ConfigError::invalid(
                format!("apps[{i}].services[{k}]"),
                format!("{} is listed twice", service.as_str()),
            ));
        }
        if !app.has_table(*service) {
            return Err(ConfigError::invalid(
                format!("apps[{i}].services[{k}]"),
                format!(
                    "{0} is listed but the app has no [apps.{0}] table",
                    service.as_str()
                ),
            ));
        }
    }
    for service in ServiceName::ALL {
        if app.has_table(service) && !list.contains(&service) {
            return Err(ConfigError::invalid(
                format!("apps[{i}].{}", service.as_str()),
                format!(
                    "is configured but {} is not in apps[{i}].services",
                    service.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn validate_webpush_app(at: &str, webpush: &WebPushApp) -> Result<(), ConfigError> {
    let key = format!("{at}.vapid_key_file");
    let pem = std::fs::read_to_string(&webpush.vapid_key_file).map_err(|e| {
        ConfigError::invalid(
            &key,
            format!("cannot read {}: {e}", webpush.vapid_key_file.display()),
        )
    })?;
    crate::push::webpush::VapidKey::from_pem(&pem).map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
    let subject = webpush.subject.as_str();
    let contact = subject
        .strip_prefix("mailto:")
        .or_else(|| subject.strip_prefix("https://"))
        .is_some_and(|rest| !rest.trim().is_empty());
    if !contact {
        return Err(ConfigError::invalid(
            format!("{at}.subject"),
            format!("must be a mailto: or https:// contact for the push services (got {subject:?})"),
        ));
    }
    Ok(())
}

// ---- [ohttp] (issue 13) -------------------------------------------------------------

/// Default of `ohttp.listen`.
pub const DEFAULT_OHTTP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7402);

/// `[ohttp]`: the Oblivious HTTP gateway (RFC 9458; DESIGN.md "Oblivious HTTP"). Off by
/// default. Its keys derive from the relay secret per epoch: the key of epoch
/// `e = floor(unix_s / rotation_s)` has key id `(key_id + e) mod 256`, and the previous
/// epoch's key is still accepted for `grace_s` after a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ohttp {
    /// Serve the gateway.
    pub enabled: bool,
    /// The gateway's own HTTP listener (HTTP/1.1 and HTTP/2): the key configuration at
    /// `/.well-known/ohttp-gateway` (GET) and the gateway resource (POST) at the same path.
    /// Not the admin listener, which serves `/metrics` and must stay private while this
    /// one faces the OHTTP relays.
    pub listen: SocketAddr,
    /// Serve the gateway over TLS with the relay's `tls_cert` and `tls_key` (reloaded with
    /// them on SIGHUP).
    pub tls: bool,
    /// The key id of epoch 0 (see the type's docs).
    pub key_id: u8,
    /// How long one key is current, in seconds.
    pub rotation_s: u64,
    /// How long the previous key is still accepted after a rotation, in seconds (0: not
    /// at all). At most `rotation_s`.
    pub grace_s: u64,
    /// OHTTP relays (IP addresses or CIDR blocks) that front many clients: requests that
    /// come through the gateway from them get `relay_rate_factor` times every per-IP
    /// budget, their own; the per-account limits apply to each request as always.
    pub relays: Vec<String>,
    /// How many times the per-IP budgets a listed OHTTP relay gets.
    pub relay_rate_factor: u32,
}

impl Default for Ohttp {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: DEFAULT_OHTTP_LISTEN,
            tls: false,
            key_id: 0,
            rotation_s: 7 * 24 * 3600,
            grace_s: 24 * 3600,
            relays: Vec::new(),
            relay_rate_factor: 100,
        }
    }
}

impl Ohttp {
    /// The parsed `relays` (call after validation; bad entries are skipped).
    pub fn relay_blocks(&self) -> Vec<IpBlock> {
        self.relays
            .iter()
            .filter_map(|e| IpBlock::parse(e).ok())
            .collect()
    }
}

/// Shortest `ohttp.rotation_s`: clients must be able to keep up with rotations.
const MIN_OHTTP_ROTATION_S: u64 = 60;
/// Longest `ohttp.rotation_s`: a year.
const MAX_OHTTP_ROTATION_S: u64 = 365 * 24 * 3600;

impl Config {
    /// `[ohttp]`: checked whether enabled or not, so a mistake shows before it is switched on.
    fn validate_ohttp(&self) -> Result<(), ConfigError> {
        let o = &self.ohttp;
        in_range_u(
            "ohttp.rotation_s",
            o.rotation_s,
            MIN_OHTTP_ROTATION_S,
            MAX_OHTTP_ROTATION_S,
        )?;
        if o.grace_s > o.rotation_s {
            return Err(ConfigError::invalid(
                "ohttp.grace_s",
                format!(
                    "must be at most ohttp.rotation_s ({}), so at most two keys are accepted at once",
                    o.rotation_s
                ),
            ));
        }
        for (i, entry) in o.relays.iter().enumerate() {
            IpBlock::parse(entry).map_err(|rule| ConfigError::invalid(format!("ohttp.relays[{i}]"), rule))?;
        }
        in_range(
            "ohttp.relay_rate_factor",
            i64::from(o.relay_rate_factor),
            1,
            10_000,
        )?;
        if !o.enabled {
            return Ok(());
        }
        if o.listen.port() != 0 {
            for (key, addr) in [("listen", self.listen), ("admin_listen", self.admin_listen)] {
                if addr == o.listen {
                    return Err(ConfigError::invalid(
                        "ohttp.listen",
                        format!("must differ from {key} (both are {addr})"),
                    ));
                }
            }
        }
        if o.tls && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(ConfigError::invalid(
                "ohttp.tls",
                "needs tls_cert and tls_key (the gateway serves the relay's certificate)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod ohttp_tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new(""), |_| None)
    }

    #[test]
    fn the_gateway_is_off_by_default_and_its_keys_are_named_when_wrong() {
        let c = parse("").unwrap();
        assert!(!c.ohttp.enabled);
        assert_eq!(c.ohttp.listen, DEFAULT_OHTTP_LISTEN);
        let ok = parse("[ohttp]\nenabled = true\nkey_id = 7\nrelays = [\"192.0.2.1\", \"2001:db8::/64\"]\n")
            .unwrap();
        assert_eq!(ok.ohttp.key_id, 7);
        assert_eq!(ok.ohttp.relay_blocks().len(), 2);
        let cases = [
            ("[ohttp]\nrotation_s = 10\n", "ohttp.rotation_s"),
            ("[ohttp]\nrotation_s = 3600\ngrace_s = 3601\n", "ohttp.grace_s"),
            ("[ohttp]\nrelays = [\"nope\"]\n", "ohttp.relays[0]"),
            ("[ohttp]\nrelay_rate_factor = 0\n", "ohttp.relay_rate_factor"),
            ("[ohttp]\nkey_id = 256\n", "ohttp.key_id"),
            ("[ohttp]\nlisten = \"nowhere\"\n", "ohttp.listen"),
            ("[ohttp]\nbogus = 1\n", "ohttp.bogus"),
            ("[ohttp]\nenabled = true\ntls = true\n", "ohttp.tls"),
            (
                "admin_listen = \"127.0.0.1:7402\"\n[ohttp]\nenabled = true\n",
                "ohttp.listen",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
        }
    }
}

// ---- end of [ohttp] ---------------------------------------------------------------------

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// Says where an overridden key's value came from, so the operator looks in the right place.
fn annotate_env(key: &str, from_env: &HashSet<&str>) -> String {
    if from_env.contains(key) {
        format!("{key} (from {})", env_name(key))
    } else if key == "." || key.is_empty() {
        "(top level)".to_owned()
    } else {
        key.to_owned()
    }
}

/// serde says "unknown field `x`, expected one of …"; the operator wrote a key.
fn plain_rule(message: &str) -> String {
    match message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once("`, "))
    {
        Some((_, expected)) => format!("unknown key ({expected})"),
        None => message.to_owned(),
    }
}

fn in_range(key: &str, value: i64, min: i64, max: i64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be in {min}..={max} (got {value})"),
        ))
    }
}

fn in_range_u(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    in_range(
        key,
        i64::try_from(value).unwrap_or(i64::MAX),
        i64::try_from(min).unwrap_or(0),
        i64::try_from(max).unwrap_or(i64::MAX),
    )
}

fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value >= min {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be at least {min} (got {value})"),
        ))
    }
}

fn non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::invalid(key, "must not be empty"))
    } else {
        Ok(())
    }
}

fn endpoint(key: &str, value: &str) -> Result<(), ConfigError> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("must be an http:// or https:// URL with a host (got {value:?})"),
        )),
    }
}

fn readable(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new(""), no_env)
    }

    fn bad_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_gives_design_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:7401".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./tidings-data"));
        assert_eq!(c.storage.backend, Backend::Embedded);
        assert_eq!(c.limits.max_message_bytes, 65_536);
        assert_eq!(c.limits.default_ttl_ms, 1_209_600_000);
        assert_eq!(c.limits.max_ttl_ms, 2_592_000_000);
        assert_eq!(c.limits.min_ttl_ms, 10_000);
        assert_eq!(c.limits.clock_window_s, 300);
        assert_eq!(c.limits.max_wait_ms, 60_000);
        assert_eq!(c, Config::default());
    }

    #[test]
    fn design_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["AuthKey_ABC123DEFG.p8", "service-account.json", "extra-root.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let text = r#"
listen = "127.0.0.1:7400"
admin_listen = "127.0.0.1:7401"
data_dir = "./tidings-data"

[storage]
backend = "embedded"
postgres_url = "postgres://postgres@127.0.0.1/tidings"

[[apps]]
id = "com.example.messenger"
  [apps.apns]
  key_file = "AuthKey_ABC123DEFG.p8"
  key_id = "ABC123DEFG"
  team_id = "TEAM123456"
  topic = "com.example.messenger"
  endpoint = "https://api.push.apple.com"
  sandbox_endpoint = "https://api.sandbox.push.apple.com"
  ca_file = "extra-root.pem"
  [apps.fcm]
  service_account_file = "service-account.json"
  endpoint = "http://127.0.0.1:9999"
  ca_file = "extra-root.pem"
"#;
        let c = Config::from_toml(text, dir.path(), no_env).unwrap();
        assert_eq!(c.app_ids(), vec!["com.example.messenger".to_owned()]);
        let apns = c.apps[0].apns.as_ref().unwrap();
        assert_eq!(apns.key_file, dir.path().join("AuthKey_ABC123DEFG.p8"));
        assert_eq!(c.apps[0].fcm.as_ref().unwrap().endpoint, "http://127.0.0.1:9999");
    }

    #[test]
    fn endpoints_default_to_the_providers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.p8"), "x").unwrap();
        let text = "[[apps]]\nid = \"a\"\n[apps.apns]\nkey_file = \"k.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"a\"\n";
        let c = Config::from_toml(text, dir.path(), no_env).unwrap();
        let apns = c.apps[0].apns.as_ref().unwrap();
        assert_eq!(apns.endpoint, "https://api.push.apple.com");
        assert_eq!(apns.sandbox_endpoint, "https://api.sandbox.push.apple.com");
    }

    #[test]
    fn env_overrides_the_file() {
        let env = |name: &str| match name {
            "TIDINGS_LISTEN" => Some("127.0.0.1:9000".to_owned()),
            "TIDINGS_DATA_DIR" => Some("/tmp/elsewhere".to_owned()),
            _ => None,
        };
        let c = Config::from_toml(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"x\"",
            Path::new("/etc"),
            env,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/elsewhere"));
    }

    #[test]
    fn file_paths_are_relative_to_the_file() {
        let c = Config::from_toml("data_dir = \"data\"", Path::new("/etc/tidings"), no_env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/tidings/data"));
    }

    #[test]
    fn a_bad_env_value_names_the_variable() {
        let env = |name: &str| (name == "TIDINGS_ADMIN_LISTEN").then(|| "nonsense".to_owned());
        let err = Config::from_toml("", Path::new(""), env).unwrap_err();
        assert_eq!(err.key(), Some("admin_listen (from TIDINGS_ADMIN_LISTEN)"));
    }

    #[test]
    fn unknown_keys_are_rejected_by_full_path() {
        assert_eq!(bad_key("lisen = \"127.0.0.1:1\""), "lisen");
        assert_eq!(bad_key("[limits]\nmax_bytes = 3"), "limits.max_bytes");
        assert_eq!(
            bad_key("[storage]\nbackend = \"embedded\"\nurl = \"x\""),
            "storage.url"
        );
        assert_eq!(bad_key("[[apps]]\nid = \"a\"\ncolour = 1"), "apps[0].colour");
        let e = parse("[sweep]\nevery = 1").unwrap_err().to_string();
        assert_eq!(
            e,
            "`sweep.every`: unknown key (expected `interval_ms` or `batch`)"
        );
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        assert_eq!(bad_key("listen = \"localhost\""), "listen");
        assert_eq!(bad_key("[limits]\nmax_ttl_ms = \"long\""), "limits.max_ttl_ms");
        assert_eq!(bad_key("[storage]\nbackend = \"sqlite\""), "storage.backend");
        assert_eq!(
            bad_key("[storage]\nbackend = \"postgres\""),
            "storage.postgres_url"
        );
        assert_eq!(bad_key("[storage]\ncache_mb = 1"), "storage.cache_mb");
        assert_eq!(bad_key("[storage]\ncache_mb = -5"), "storage.cache_mb");
        assert_eq!(
            bad_key("[[apps]]\nid = \"a\"\n[apps.fcm]\nendpoint = \"x\""),
            "apps[0].fcm"
        );
    }

    #[test]
    fn limits_must_be_consistent() {
        assert_eq!(bad_key("[limits]\nmin_ttl_ms = 0"), "limits.min_ttl_ms");
        assert_eq!(
            bad_key("[limits]\ndefault_ttl_ms = 5000"),
            "limits.default_ttl_ms"
        );
        assert_eq!(bad_key("[limits]\nmax_ttl_ms = 1000"), "limits.max_ttl_ms");
        assert_eq!(bad_key("[limits]\ndefault_limit = 5000"), "limits.default_limit");
        assert_eq!(
            bad_key("[limits]\nmax_message_bytes = 0"),
            "limits.max_message_bytes"
        );
        assert_eq!(
            bad_key("[limits]\nmax_message_bytes = 5000000"),
            "limits.max_response_bytes"
        );
        assert_eq!(bad_key("[sweep]\ninterval_ms = 0"), "sweep.interval_ms");
        assert_eq!(
            bad_key("listen = \"127.0.0.1:5\"\nadmin_listen = \"127.0.0.1:5\""),
            "admin_listen"
        );
    }

    #[test]
    fn apps_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sa.json"), "{}").unwrap();
        let app = |id: &str, endpoint: &str, file: &str| {
            format!(
                "[[apps]]\nid = \"{id}\"\n[apps.fcm]\nservice_account_file = \"{file}\"\nendpoint = \"{endpoint}\"\n"
            )
        };
        let check = |text: String| Config::from_toml(&text, dir.path(), no_env);
        assert!(check(app("a", "http://127.0.0.1:1", "sa.json")).is_ok());
        let two = app("a", "https://x", "sa.json") + &app("a", "https://y", "sa.json");
        assert_eq!(check(two).unwrap_err().key(), Some("apps[1].id"));
        let bad_scheme = check(app("a", "ftp://x", "sa.json")).unwrap_err();
        assert_eq!(bad_scheme.key(), Some("apps[0].fcm.endpoint"));
        let missing = check(app("a", "https://x", "missing.json")).unwrap_err();
        assert_eq!(missing.key(), Some("apps[0].fcm.service_account_file"));
        let bare = check("[[apps]]\nid = \"a\"\n".to_owned()).unwrap_err();
        assert_eq!(bare.key(), Some("apps[0]"));
    }

    /// A directory with a VAPID key, an HMS secret and a service account.
    fn push_files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let vapid = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.path().join("vapid.pem"), vapid.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("hms-secret"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        std::fs::write(dir.path().join("sa.json"), "{}").unwrap();
        std::fs::write(
            dir.path().join("not-a-key.pem"),
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        dir
    }

    const WEBPUSH_APP: &str =
        "[apps.webpush]\nvapid_key_file = \"vapid.pem\"\nsubject = \"mailto:ops@example.com\"\n";
    const HMS_APP: &str = "[apps.hms]\napp_id = \"104123456\"\nclient_secret_file = \"hms-secret\"\n";
    const FCM_APP: &str = "[apps.fcm]\nservice_account_file = \"sa.json\"\n";

    #[test]
    fn web_push_and_hms_apps_parse() {
        let dir = push_files();
        let text = format!(
            "[webpush]\nallow_http = true\nallow_networks = [\"127.0.0.1/32\"]\nallow_hosts = [\"push.internal\"]\n\
             [[apps]]\nid = \"a\"\nservices = [\"webpush\", \"hms\", \"fcm\"]\n{WEBPUSH_APP}{HMS_APP}{FCM_APP}"
        );
        let c = Config::from_toml(&text, dir.path(), no_env).unwrap();
        let app = &c.apps[0];
        assert_eq!(
            app.webpush.as_ref().unwrap().vapid_key_file,
            dir.path().join("vapid.pem")
        );
        let hms = app.hms.as_ref().unwrap();
        assert_eq!(hms.client_id(), "104123456");
        assert_eq!(hms.endpoint, "https://push-api.cloud.huawei.com");
        assert_eq!(
            hms.token_endpoint,
            "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
        );
        assert!(app.accepts(ServiceName::Webpush) && app.accepts(ServiceName::Hms));
        assert!(!app.accepts(ServiceName::Apns));
        assert!(
            c.webpush
                .endpoint_policy()
                .check_url("http://127.0.0.1:1/x")
                .is_ok()
        );
        // Without a list, every configured table is accepted.
        let text = format!("[[apps]]\nid = \"a\"\n{WEBPUSH_APP}");
        let c = Config::from_toml(&text, dir.path(), no_env).unwrap();
        assert!(c.apps[0].accepts(ServiceName::Webpush) && !c.apps[0].accepts(ServiceName::Fcm));
    }

    #[test]
    fn web_push_hms_and_services_errors_name_the_key() {
        let dir = push_files();
        let key = |text: String| match Config::from_toml(&text, dir.path(), no_env) {
            Err(ConfigError::Invalid { key, rule }) => format!("{key}: {rule}"),
            other => panic!("expected an invalid key, got {other:?}"),
        };
        let app = |extra: &str| format!("[[apps]]\nid = \"a\"\n{extra}");
        let cases: Vec<(String, &str)> = vec![
            (
                app(&format!("services = [\"webpush\", \"gcm\"]\n{WEBPUSH_APP}")),
                "apps[0].services[1]: unknown variant `gcm`",
            ),
            (
                app(&format!("services = [\"webpush\", \"webpush\"]\n{WEBPUSH_APP}")),
                "apps[0].services[1]: webpush is listed twice",
            ),
            (
                app(&format!("services = [\"webpush\", \"hms\"]\n{WEBPUSH_APP}")),
                "apps[0].services[1]: hms is listed but the app has no [apps.hms] table",
            ),
            (
                app(&format!("services = [\"webpush\"]\n{WEBPUSH_APP}{FCM_APP}")),
                "apps[0].fcm: is configured but fcm is not in apps[0].services",
            ),
            (
                app(&format!("services = []\n{WEBPUSH_APP}")),
                "apps[0].services: must name at least one service",
            ),
            (
                app("[apps.webpush]\nvapid_key_file = \"missing.pem\"\nsubject = \"mailto:a@b\"\n"),
                "apps[0].webpush.vapid_key_file: cannot read",
            ),
            (
                app("[apps.webpush]\nvapid_key_file = \"not-a-key.pem\"\nsubject = \"mailto:a@b\"\n"),
                "apps[0].webpush.vapid_key_file: not a P-256 private key",
            ),
            (
                app("[apps.webpush]\nvapid_key_file = \"sa.json\"\nsubject = \"mailto:a@b\"\n"),
                "apps[0].webpush.vapid_key_file: not a P-256 private key",
            ),
            (
                app("[apps.webpush]\nvapid_key_file = \"vapid.pem\"\nsubject = \"ops@example.com\"\n"),
                "apps[0].webpush.subject: must be a mailto: or https:// contact",
            ),
            (
                app("[apps.webpush]\nvapid_key_file = \"vapid.pem\"\n"),
                "apps[0].webpush: missing field `subject`",
            ),
            (
                app("[apps.hms]\napp_id = \"10/4\"\nclient_secret_file = \"hms-secret\"\n"),
                "apps[0].hms.app_id: must be the AppGallery app id",
            ),
            (
                app("[apps.hms]\napp_id = \"104\"\nclient_secret_file = \"empty\"\n"),
                "apps[0].hms.client_secret_file: is empty",
            ),
            (
                app("[apps.hms]\napp_id = \"104\"\nclient_secret_file = \"nope\"\n"),
                "apps[0].hms.client_secret_file: cannot read",
            ),
            (
                app(
                    "[apps.hms]\napp_id = \"104\"\nclient_secret_file = \"hms-secret\"\nendpoint = \"push-api\"\n",
                ),
                "apps[0].hms.endpoint: must be an http:// or https:// URL",
            ),
            (
                app(
                    "[apps.hms]\napp_id = \"104\"\nclient_secret_file = \"hms-secret\"\ntoken_endpoint = \"ftp://x\"\n",
                ),
                "apps[0].hms.token_endpoint: must be an http:// or https:// URL",
            ),
            (
                app("[apps.hms]\napp_id = \"104\"\nclient_secret = \"inline\"\n"),
                "apps[0].hms.client_secret: unknown key",
            ),
            (
                "[webpush]\nallow_networks = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n".to_owned(),
                "webpush.allow_networks[1]: prefix length must be 0..=32",
            ),
            (
                "[webpush]\nallow_hosts = [\"bad host\"]\n".to_owned(),
                "webpush.allow_hosts[0]: must be a host name or IP address",
            ),
            (
                "[webpush]\nallow_http = \"yes\"\n".to_owned(),
                "webpush.allow_http: invalid type",
            ),
            (
                "[webpush]\nca_file = \"missing.pem\"\n".to_owned(),
                "webpush.ca_file: cannot read",
            ),
            (
                "[webpush]\nallow_everything = true\n".to_owned(),
                "webpush.allow_everything: unknown key",
            ),
        ];
        for (text, says) in cases {
            let got = key(text.clone());
            assert!(got.starts_with(says), "{text}\n  got:  {got}\n  want: {says}");
        }
    }

    #[test]
    fn syntax_errors_are_reported_as_such() {
        assert!(matches!(parse("listen = "), Err(ConfigError::Syntax { .. })));
    }

    #[test]
    fn rate_limits_and_caps_are_checked() {
        assert_eq!(
            bad_key("[rate_limits]\nstore_per_ip_per_s = 0"),
            "rate_limits.store_per_ip_per_s"
        );
        assert_eq!(
            bad_key("[rate_limits]\ntrusted_proxies = [\"10.0.0.1\", \"10.0.0.0/33\"]"),
            "rate_limits.trusted_proxies[1]"
        );
        assert_eq!(
            bad_key("[rate_limits]\nclient_ip_header = \"x forwarded\""),
            "rate_limits.client_ip_header"
        );
        assert_eq!(bad_key("[rate_limits]\nburst = 3"), "rate_limits.burst");
        assert_eq!(
            bad_key("[limits]\nmax_messages_per_mailbox = 0"),
            "limits.max_messages_per_mailbox"
        );
        assert_eq!(
            bad_key("[limits]\nmax_long_polls = 10\nmax_long_polls_per_account = 11"),
            "limits.max_long_polls_per_account"
        );
        let c = parse("[rate_limits]\nenabled = false\ntrusted_proxies = [\"fd00::/8\"]").unwrap();
        assert!(!c.rate_limits.enabled);
        assert_eq!(c.rate_limits.trusted_blocks().len(), 1);
    }

    #[test]
    fn ip_blocks_match_addresses() {
        let block = |s: &str| IpBlock::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(block("10.0.0.0/8").contains(ip("10.200.1.2")));
        assert!(!block("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(block("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(block("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(!block("192.168.1.7").contains(ip("192.168.1.8")));
        assert!(block("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(block("fd00::/8").contains(ip("fd12::1")));
        assert!(!block("fd00::/8").contains(ip("10.0.0.1")));
        assert!(IpBlock::parse("nonsense").is_err());
    }

    #[test]
    fn request_size_limit_covers_the_largest_request() {
        let l = Limits::default();
        assert!(l.max_request_bytes() > l.max_message_bytes as usize);
        assert!(l.max_request_bytes() > l.max_delete_hashes as usize * 34);
    }
}
