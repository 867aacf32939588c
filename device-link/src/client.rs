//! The async relay client: the Mailbox and Relay services of DESIGN.md over tonic, with
//! requests signed exactly as `tidings_proto::sign` lays them out.
//!
//! Calls that fail with `UNAVAILABLE` (relay restarting, storage refusing writes, no
//! connection) are retried with jittered exponential backoff, and calls refused by a
//! rate limit (`RESOURCE_EXHAUSTED` with the relay's `retry-after-ms` hint, up to 10 s)
//! after that hint; every request here is idempotent (Store by its hash, Subscribe by
//! (account, device)), so a retry never duplicates anything. Any other status ends the
//! call with a [`ClientError`] that keeps the gRPC code and message.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ed25519_dalek::SigningKey;
use tidings_proto::{
    namespace,
    seal::seal_registration,
    sign,
    v1::{
        DeleteRequest, GetRelayInfoRequest, RetrieveRequest, StoreRequest, SubscribeRequest,
        mailbox_client::MailboxClient, relay_client::RelayClient as RelayRpcClient,
    },
};
use tonic::{
    Code, Request, Response, Status,
    transport::{Channel, Endpoint},
};

use crate::{
    identity::Identity,
    ohttp::{OhttpSettings, OhttpTransport, Transport},
    tls::{self, RelayConnector, TlsConnectError, TrustRoots},
};

pub use tidings_proto::v1::{
    DeviceRegistration, PushNotification, PushService, RelayInfo, RetrieveResponse, StoreResponse,
    StoredMessage, SubscribeResponse, UnsubscribeRequest,
};

/// The longest long-poll the relay honours (DESIGN.md "Mailbox").
pub const MAX_WAIT_MS: u32 = 60_000;

/// Why a relay call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string is not a usable URI, or its TLS settings are invalid.
    #[error("invalid relay endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection to the relay could be made (after the configured retries).
    #[error("cannot connect to the relay: {0}")]
    Connect(String),
    /// The relay's TLS certificate is not trusted by the configured roots (not retried:
    /// it is no passing condition). The text says which roots and why.
    #[error("the relay's certificate is not trusted: {0}")]
    UntrustedCertificate(String),
    /// The relay (or the transport) answered with a gRPC status other than OK.
    #[error("relay answered {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message (names the field and rule for `INVALID_ARGUMENT`).
        message: String,
    },
    /// The namespace is outside 0..=32767.
    #[error("namespace {0} is not within 0..=32767")]
    InvalidNamespace(i32),
    /// An unsigned Store into an owner-only namespace: use `store_owned`.
    #[error("namespace {0} is owner-only: a store there must be signed (store_owned)")]
    OwnerOnlyNamespace(i32),
    /// The relay's answer broke the wire contract.
    #[error("the relay sent an invalid {0}")]
    InvalidResponse(&'static str),
}

impl ClientError {
    /// The gRPC code of the failure, `UNAVAILABLE` for connection failures, `None` for
    /// errors raised before anything was sent.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            ClientError::Connect(_) | ClientError::UntrustedCertificate(_) => Some(Code::Unavailable),
            _ => None,
        }
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        ClientError::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// How often and how patiently `UNAVAILABLE` is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Upper bound of the first pause; doubles with each retry.
    pub initial_backoff: Duration,
    /// Upper bound of any pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first `UNAVAILABLE` is returned.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The pause after failed attempt `attempt` (1-based): uniformly random in
    /// `[0, min(max_backoff, initial_backoff · 2^(attempt-1))]` ("full jitter"), so
    /// many devices cut off by one relay restart do not come back in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1));
        let ceiling = self
            .initial_backoff
            .saturating_mul(doubling)
            .min(self.max_backoff);
        let fraction =
            f64::from(u32::from_be_bytes(tidings_proto::random_bytes::<4>())) / f64::from(u32::MAX);
        ceiling.mul_f64(fraction)
    }
}

/// Connection and call settings of a [`RelayClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Retries of `UNAVAILABLE`, for connecting and for every call.
    pub retry: RetryPolicy,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Client-side deadline of one call (long-polls get `wait_ms` plus `long_poll_margin`).
    pub rpc_timeout: Duration,
    /// What a long-poll's deadline adds to its `wait_ms` for the network and the relay.
    pub long_poll_margin: Duration,
    /// Which roots the certificate of an `https://` relay is checked against.
    pub roots: TrustRoots,
    /// Roots trusted beside `roots`, for a relay behind a private CA: each entry one or
    /// more PEM certificates. A bad entry fails the client's creation, naming its index.
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// Reach the relay through an OHTTP relay (Oblivious HTTP, `crate::ohttp`) instead of
    /// connecting to it: the endpoint is then the relay's OHTTP gateway (`[ohttp] listen`),
    /// and the same calls give the same answers and errors. `https://` OHTTP relays are
    /// checked against `roots` and `extra_roots_pem`.
    pub ohttp: Option<OhttpSettings>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(30),
            long_poll_margin: Duration::from_secs(10),
            roots: TrustRoots::default(),
            extra_roots_pem: Vec::new(),
            ohttp: None,
        }
    }
}

/// Whoever owns a mailbox: an account ([`Identity`]) or a bare key such as QR linking's
/// one-time mailbox.
pub trait MailboxOwner {
    /// The mailbox's account key.
    fn account(&self) -> [u8; 32];
    /// The key that signs for it.
    fn signing_key(&self) -> &SigningKey;
}

impl MailboxOwner for Identity {
    fn account(&self) -> [u8; 32] {
        Identity::account(self)
    }
    fn signing_key(&self) -> &SigningKey {
        Identity::signing_key(self)
    }
}

impl MailboxOwner for SigningKey {
    fn account(&self) -> [u8; 32] {
        self.verifying_key().to_bytes()
    }
    fn signing_key(&self) -> &SigningKey {
        self
    }
}

/// A connection to one relay. Cheap to clone; clones share the connection and the
/// cached relay key.
#[derive(Debug, Clone)]
pub struct RelayClient {
    mailbox: MailboxClient<Transport>,
    relay: RelayRpcClient<Transport>,
    /// The OHTTP transport, when calls go through one (its pinned key is read from here).
    ohttp: Option<OhttpTransport>,
    options: Arc<ClientOptions>,
    relay_key: Arc<Mutex<Option<[u8; 32]>>>,
}

impl RelayClient {
    /// Connects to `endpoint` (`http://host:port`, `https://host:port`, or `host:port`
    /// for plain HTTP/2) with default options.
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects with explicit options, retrying a refused connection like `UNAVAILABLE`
    /// (but not a relay certificate that is not trusted: that is no passing condition).
    pub async fn connect_with(endpoint: &str, options: ClientOptions) -> Result<Self, ClientError> {
        if let Some(settings) = &options.ohttp {
            let transport = ohttp_transport(endpoint, settings, &options)?;
            if transport.key_config().is_none() {
                fetch_ohttp_keys(&transport, &options.retry).await?;
            }
            return Ok(Self::with_transport(Transport::Ohttp(transport), options));
        }
        let target = build_endpoint(endpoint, &options)?;
        let mut attempt = 0;
        let channel = loop {
            attempt += 1;
            match target.connect().await {
                Ok(channel) => break channel,
                Err(e)
                    if attempt < options.retry.max_attempts && !TlsConnectError::is_certificate_error(&e) =>
                {
                    tracing::debug!(attempt, error = %error_chain(&e), "relay connect failed, retrying");
                    tokio::time::sleep(options.retry.backoff(attempt)).await;
                }
                Err(e) if TlsConnectError::is_certificate_error(&e) => {
                    return Err(ClientError::UntrustedCertificate(error_chain(&e)));
                }
                Err(e) => return Err(ClientError::Connect(error_chain(&e))),
            }
        };
        Ok(Self::from_channel(channel, options))
    }

    /// A client that connects on first use (and reconnects by itself), for apps that
    /// start while offline. Fails only on a malformed endpoint.
    pub fn connect_lazy(endpoint: &str, options: ClientOptions) -> Result<Self, ClientError> {
        if let Some(settings) = &options.ohttp {
            let transport = ohttp_transport(endpoint, settings, &options)?;
            return Ok(Self::with_transport(Transport::Ohttp(transport), options));
        }
        let target = build_endpoint(endpoint, &options)?;
        Ok(Self::from_channel(target.connect_lazy(), options))
    }

    /// A client over an existing tonic channel.
    pub fn from_channel(channel: Channel, options: ClientOptions) -> Self {
        Self::with_transport(Transport::Direct(channel), options)
    }

    fn with_transport(transport: Transport, options: ClientOptions) -> Self {
        let ohttp = match &transport {
            Transport::Ohttp(ohttp) => Some(ohttp.clone()),
            Transport::Direct(_) => None,
        };
        Self {
            mailbox: MailboxClient::new(transport.clone()),
            relay: RelayRpcClient::new(transport),
            ohttp,
            options: Arc::new(options),
            relay_key: Arc::new(Mutex::new(None)),
        }
    }

    /// Through OHTTP: the gateway's key configuration the client encapsulates to now (as
    /// given, fetched, or moved to on a rotation), for the app to keep and pass as
    /// `OhttpSettings::key_config` next time. `None` over a direct connection, or before
    /// a lazy client fetched it.
    pub fn ohttp_key_config(&self) -> Option<Vec<u8>> {
        self.ohttp.as_ref().and_then(OhttpTransport::key_config)
    }

    /// Deposits `data` into a public namespace (0..=9) of `account`: unsigned, anyone may.
    pub async fn store(
        &self,
        account: &[u8; 32],
        namespace: i32,
        data: &[u8],
        ttl_ms: i64,
    ) -> Result<StoreResponse, ClientError> {
        check_namespace(namespace)?;
        if namespace::is_owner_only(namespace) {
            return Err(ClientError::OwnerOnlyNamespace(namespace));
        }
        let make = || StoreRequest {
            account: account.to_vec(),
            namespace,
            data: data.to_vec(),
            ttl_ms,
            ts: 0,
            signature: Vec::new(),
        };
        self.send_store(make).await
    }

    /// Sends a Store built by `make` (rebuilt per attempt, so a retry re-signs with a fresh
    /// `ts`) and checks the answer's hash.
    async fn send_store(&self, make: impl Fn() -> StoreRequest) -> Result<StoreResponse, ClientError> {
        let resp = self
            .call(
                self.options.rpc_timeout,
                |req| {
                    let mut c = self.mailbox.clone();
                    async move { c.store(req).await }
                },
                make,
            )
            .await?;
        check_hash(&resp.hash)?;
        Ok(resp)
    }

    /// Stores `data` into one of the owner's namespaces, signed (required for 10..=32767).
    pub async fn store_owned(
        &self,
        owner: &impl MailboxOwner,
        namespace: i32,
        data: &[u8],
        ttl_ms: i64,
    ) -> Result<StoreResponse, ClientError> {
        let ns = check_namespace(namespace)?;
        let account = owner.account();
        let make = || {
            let ts = unix_now();
            let msg = sign::store_bytes(&account, ns, ts, ttl_ms, data);
            StoreRequest {
                account: account.to_vec(),
                namespace,
                data: data.to_vec(),
                ttl_ms,
                ts,
                signature: sign::sign(owner.signing_key(), &msg).to_vec(),
            }
        };
        self.send_store(make).await
    }

    /// Fetches up to `limit` messages with `seq > after_seq` (0: the relay's default).
    /// With `wait_ms > 0` (at most 60 000) and nothing newer, the relay holds the call
    /// open until a message arrives or the wait ends (long-poll).
    pub async fn retrieve(
        &self,
        owner: &impl MailboxOwner,
        namespace: i32,
        after_seq: u64,
        limit: u32,
        wait_ms: u32,
    ) -> Result<RetrieveResponse, ClientError> {
        let ns = check_namespace(namespace)?;
        let wait_ms = wait_ms.min(MAX_WAIT_MS);
        let account = owner.account();
        let make = || {
            let ts = unix_now();
            let msg = sign::retrieve_bytes(&account, ns, ts);
            RetrieveRequest {
                account: account.to_vec(),
                namespace,
                after_seq,
                limit,
                wait_ms,
                ts,
                signature: sign::sign(owner.signing_key(), &msg).to_vec(),
            }
        };
        let deadline = Duration::from_millis(u64::from(wait_ms)) + self.options.long_poll_margin;
        let resp = self
            .call(
                deadline,
                |req| {
                    let mut c = self.mailbox.clone();
                    async move { c.retrieve(req).await }
                },
                make,
            )
            .await?;
        if resp
            .messages
            .iter()
            .any(|m| m.hash.len() != tidings_proto::HASH_LEN)
        {
            return Err(ClientError::InvalidResponse("message hash"));
        }
        Ok(resp)
    }

    /// Deletes the owner's messages by hash; returns how many were deleted.
    pub async fn delete<H: AsRef<[u8]>>(
        &self,
        owner: &impl MailboxOwner,
        namespace: i32,
        hashes: &[H],
    ) -> Result<u32, ClientError> {
        let ns = check_namespace(namespace)?;
        let account = owner.account();
        let make = || {
            let ts = unix_now();
            let msg = sign::delete_bytes(&account, ns, ts, hashes);
            DeleteRequest {
                account: account.to_vec(),
                namespace,
                hashes: hashes.iter().map(|h| h.as_ref().to_vec()).collect(),
                ts,
                signature: sign::sign(owner.signing_key(), &msg).to_vec(),
            }
        };
        let resp = self
            .call(
                self.options.rpc_timeout,
                |req| {
                    let mut c = self.mailbox.clone();
                    async move { c.delete(req).await }
                },
                make,
            )
            .await?;
        Ok(resp.deleted)
    }

    /// The relay's sealing key, apps, limits and version. Also refreshes the cached key
    /// that [`RelayClient::subscribe`] seals to.
    pub async fn relay_info(&self) -> Result<RelayInfo, ClientError> {
        let info = self
            .call(
                self.options.rpc_timeout,
                |req| {
                    let mut c = self.relay.clone();
                    async move { c.get_relay_info(req).await }
                },
                || GetRelayInfoRequest {},
            )
            .await?;
        let key: [u8; 32] = info
            .x25519_public_key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::InvalidResponse("relay x25519 key"))?;
        *self.relay_key.lock().unwrap_or_else(PoisonError::into_inner) = Some(key);
        Ok(info)
    }

    /// Registers (or, for the same `device_id`, replaces) this device's push token for
    /// `namespaces` of the owner's account. The registration is sealed to the relay's
    /// key (fetched once and cached) and the signature covers the sealed bytes.
    pub async fn subscribe(
        &self,
        owner: &impl MailboxOwner,
        namespaces: &[i32],
        want_data: bool,
        registration: DeviceRegistration,
    ) -> Result<SubscribeResponse, ClientError> {
        // The wire contract wants them strictly ascending.
        let mut ns: Vec<i32> = namespaces.to_vec();
        ns.sort_unstable();
        ns.dedup();
        let ns_u32 = ns
            .iter()
            .map(|n| check_namespace(*n))
            .collect::<Result<Vec<u32>, _>>()?;
        let relay_key = self.cached_relay_key().await?;
        let account = owner.account();
        let sealed = seal_registration(&relay_key, &account, &registration);
        let make = || {
            let ts = unix_now();
            let msg = sign::subscribe_bytes(&account, ts, want_data, &ns_u32, &sealed);
            SubscribeRequest {
                account: account.to_vec(),
                namespaces: ns.clone(),
                want_data,
                ts,
                sealed: sealed.clone(),
                signature: sign::sign(owner.signing_key(), &msg).to_vec(),
            }
        };
        let result = self
            .call(
                self.options.rpc_timeout,
                |req| {
                    let mut c = self.relay.clone();
                    async move { c.subscribe(req).await }
                },
                make,
            )
            .await;
        if matches!(&result, Err(e) if e.code() == Some(Code::InvalidArgument)) {
            // Perhaps the relay's key changed: fetch it afresh next time.
            *self.relay_key.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        result
    }

    /// Removes this device's registration; `true` when there was one.
    pub async fn unsubscribe(
        &self,
        owner: &impl MailboxOwner,
        device_id: &[u8; 16],
    ) -> Result<bool, ClientError> {
        // Signed afresh for each attempt, like every other call.
        self.send_unsubscribe_with(|| signed_unsubscribe(owner, device_id))
            .await
    }

    /// Sends an Unsubscribe signed earlier by [`signed_unsubscribe`], as it is, with the
    /// retry policy of every call; `true` when it removed a registration.
    ///
    /// The relay accepts such a request for as long as a subscription lives (30 days by
    /// default) after it was signed, and it removes the registration only if that was made
    /// before the signature (give or take the relay's clock window): `false` also when the
    /// device registered again since. A refusal with `UNAUTHENTICATED` whose message names
    /// `ts` is final (too old: every registration it could remove has lapsed; or signed by
    /// a clock far ahead): drop the request then, as after any answer.
    pub async fn send_unsubscribe(&self, request: UnsubscribeRequest) -> Result<bool, ClientError> {
        self.send_unsubscribe_with(|| request.clone()).await
    }

    async fn send_unsubscribe_with(
        &self,
        make: impl Fn() -> UnsubscribeRequest,
    ) -> Result<bool, ClientError> {
        let resp = self
            .call(
                self.options.rpc_timeout,
                |req| {
                    let mut c = self.relay.clone();
                    async move { c.unsubscribe(req).await }
                },
                make,
            )
            .await?;
        Ok(resp.removed)
    }

    async fn cached_relay_key(&self) -> Result<[u8; 32], ClientError> {
        let cached = *self.relay_key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cached {
            return Ok(key);
        }
        let info = self.relay_info().await?;
        info.x25519_public_key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::InvalidResponse("relay x25519 key"))
    }

    /// Runs one RPC with a client-side deadline, retrying `UNAVAILABLE` per the policy.
    /// `make` builds the message afresh for each attempt so `ts` stays current.
    async fn call<M, T, F, Fut>(
        &self,
        deadline: Duration,
        mut send: F,
        make: impl Fn() -> M,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let retry = &self.options.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = Request::new(make());
            // Tells the relay when to give up too, so it does not hold a dead long-poll.
            req.set_timeout(deadline);
            let status = match tokio::time::timeout(deadline, send(req)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(ClientError::Status {
                        code: Code::DeadlineExceeded,
                        message: format!("no answer from the relay within {deadline:?}"),
                    });
                }
            };
            if status.code() == Code::Unavailable && TlsConnectError::is_certificate_error(&status) {
                // A lazy channel reports the handshake's refusal as UNAVAILABLE; retrying
                // cannot make the certificate trusted.
                return Err(ClientError::UntrustedCertificate(error_chain(&status)));
            }
            let pause = match status.code() {
                Code::Unavailable => Some(retry.backoff(attempt)),
                // A rate limit names when to come back; a size limit does not, and is final.
                Code::ResourceExhausted => retry_after(&status).filter(|d| *d <= MAX_RETRY_AFTER),
                _ => None,
            };
            let Some(pause) = pause.filter(|_| attempt < retry.max_attempts) else {
                return Err(status.into());
            };
            tracing::debug!(
                attempt,
                message = status.message(),
                "relay busy or unavailable, retrying"
            );
            tokio::time::sleep(pause).await;
        }
    }
}

/// The longest a rate-limited call waits for its retry hint before giving up: a longer
/// wait is the caller's decision (the error carries the relay's message).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The relay's `retry-after-ms` hint on a refused call.
fn retry_after(status: &Status) -> Option<Duration> {
    let ms = status
        .metadata()
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms))
}

/// Why a push payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushDecryptError {
    /// Not base64, or too short to be a push payload.
    #[error("the push payload is damaged (not base64, or truncated)")]
    Malformed,
    /// Encrypted under another push key (another device or install), or altered.
    #[error("the push payload is not for this device's push key, or was altered")]
    NotForThisDevice,
    /// Decrypted, but the notification inside is malformed.
    #[error("the push payload decrypted but holds no valid notification")]
    Content,
}

/// Decrypts the `enc` string of a push with the device's push key. Needs no network:
/// the iOS Notification Service Extension and Android's messaging service call it.
pub fn decrypt_push(enc: &str, push_key: &[u8; 32]) -> Result<PushNotification, PushDecryptError> {
    use tidings_proto::push::PushError;
    tidings_proto::push::decrypt_push(push_key, enc).map_err(|e| match e {
        PushError::Base64 | PushError::TooShort => PushDecryptError::Malformed,
        PushError::Decrypt => PushDecryptError::NotForThisDevice,
        PushError::Frame | PushError::Decode => PushDecryptError::Content,
    })
}

/// An Unsubscribe of `device_id` signed by `owner` now, to send at once or keep and send
/// later with [`RelayClient::send_unsubscribe`]: it carries its own signature, so sending
/// it needs neither the identity nor its key, and it may be persisted as its protobuf
/// encoding (`prost::Message::encode_to_vec`). Sign-out queues one durably before the
/// identity is deleted.
pub fn signed_unsubscribe(owner: &impl MailboxOwner, device_id: &[u8; 16]) -> UnsubscribeRequest {
    let account = owner.account();
    let ts = unix_now();
    let msg = sign::unsubscribe_bytes(&account, device_id, ts);
    UnsubscribeRequest {
        account: account.to_vec(),
        device_id: device_id.to_vec(),
        ts,
        signature: sign::sign(owner.signing_key(), &msg).to_vec(),
    }
}

/// The current Unix time in seconds, the `ts` of signed requests.
pub fn unix_now() -> i64 {
    // A clock before 1970 yields 0, which the relay rejects as out of its window.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn check_namespace(namespace: i32) -> Result<u32, ClientError> {
    if namespace::is_valid(namespace) {
        u32::try_from(namespace).map_err(|_| ClientError::InvalidNamespace(namespace))
    } else {
        Err(ClientError::InvalidNamespace(namespace))
    }
}

fn check_hash(hash: &[u8]) -> Result<(), ClientError> {
    if hash.len() == tidings_proto::HASH_LEN {
        Ok(())
    } else {
        Err(ClientError::InvalidResponse("message hash"))
    }
}

/// The OHTTP transport of `settings` to the gateway at `endpoint` (normalised as
/// [`build_endpoint`] does).
fn ohttp_transport(
    endpoint: &str,
    settings: &OhttpSettings,
    options: &ClientOptions,
) -> Result<OhttpTransport, ClientError> {
    let bad = |reason: String| ClientError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let trimmed = endpoint.trim();
    let uri = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let gateway: tonic::transport::Uri = uri.parse().map_err(|e| bad(format!("{e}")))?;
    if gateway.authority().is_none() {
        return Err(bad("no host".to_owned()));
    }
    OhttpTransport::new(
        gateway,
        settings,
        options.roots,
        &options.extra_roots_pem,
        options.connect_timeout,
    )
    .map_err(|e| bad(e.to_string()))
}

/// Fetches the gateway's key configuration, retrying what may pass like a connection.
async fn fetch_ohttp_keys(transport: &OhttpTransport, retry: &RetryPolicy) -> Result<(), ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let status = match transport.fetch_key_config().await {
            Ok(()) => return Ok(()),
            Err(status) => status,
        };
        if TlsConnectError::is_certificate_error(&status) {
            return Err(ClientError::UntrustedCertificate(error_chain(&status)));
        }
        if status.code() != Code::Unavailable {
            return Err(status.into());
        }
        if attempt >= retry.max_attempts {
            return Err(ClientError::Connect(status.message().to_owned()));
        }
        tracing::debug!(attempt, "OHTTP key configuration fetch failed, retrying");
        tokio::time::sleep(retry.backoff(attempt)).await;
    }
}

/// Where a client connects, and how: tonic's own connector for `http://`, ours
/// ([`RelayConnector`]) for `https://`.
struct Target {
    endpoint: Endpoint,
    tls: Option<RelayConnector>,
}

impl Target {
    async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(tls.service()).await,
            None => self.endpoint.connect().await,
        }
    }

    fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(tls.service()),
            None => self.endpoint.connect_lazy(),
        }
    }
}

fn build_endpoint(endpoint: &str, options: &ClientOptions) -> Result<Target, ClientError> {
    let bad = |reason: String| ClientError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let trimmed = endpoint.trim();
    let uri = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    // Checked for http:// too, so a bad root fails in development, not in production.
    tls::parse_extra_roots(&options.extra_roots_pem).map_err(|e| bad(e.to_string()))?;
    let mut ep = Endpoint::from_shared(uri).map_err(|e| bad(error_chain(&e)))?;
    let mut tls = None;
    if ep.uri().scheme_str() == Some("https") {
        let origin = ep.uri().clone();
        let connector = RelayConnector::new(&origin, options.roots, &options.extra_roots_pem)
            .map_err(|e| bad(e.to_string()))?;
        // tonic refuses an https:// URI without its own TLS, so it is handed the plain
        // address to dial (our connector does the TLS) and keeps https:// as the origin
        // its requests carry.
        let host = origin.host().unwrap_or_default();
        ep = Endpoint::from_shared(format!("http://{host}:{}", connector.port()))
            .map_err(|e| bad(error_chain(&e)))?
            .origin(origin);
        tls = Some(connector);
    }
    let endpoint = ep
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        // Keeps NAT and proxies from dropping a connection idle between long-polls.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(Target { endpoint, tls })
}

/// An error and its sources, for transport errors whose own message is only
/// "transport error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // tonic's connect error shows its source's text as its own: say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_proto::push::encrypt_push;

    #[test]
    fn a_rate_limit_hint_is_read_and_a_size_refusal_has_none() {
        let mut limited = Status::resource_exhausted("Store: too many; retry in 250 ms");
        limited
            .metadata_mut()
            .insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&limited), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after(&Status::resource_exhausted("data: at most 65536 bytes")),
            None
        );
        let mut junk = Status::resource_exhausted("x");
        junk.metadata_mut()
            .insert("retry-after-ms", "soon".parse().unwrap());
        assert_eq!(retry_after(&junk), None);
    }

    #[test]
    fn backoff_stays_within_its_ceiling() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(800),
        };
        for attempt in 1..=12 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(p.max_backoff);
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= ceiling);
            }
        }
        assert!(p.backoff(u32::MAX) <= p.max_backoff);
    }

    #[test]
    fn decrypt_push_gives_friendly_errors() {
        let note = PushNotification {
            account: vec![1; 32],
            namespace: 0,
            hash: vec![2; 32],
            seq: 7,
            ..Default::default()
        };
        let enc = encrypt_push(&[9; 32], &note);
        assert_eq!(decrypt_push(&enc, &[9; 32]), Ok(note));
        assert_eq!(
            decrypt_push(&enc, &[8; 32]),
            Err(PushDecryptError::NotForThisDevice)
        );
        assert_eq!(
            decrypt_push("not base64!", &[9; 32]),
            Err(PushDecryptError::Malformed)
        );
        assert_eq!(decrypt_push("", &[9; 32]), Err(PushDecryptError::Malformed));
    }

    #[test]
    fn namespaces_are_checked_before_sending() {
        assert_eq!(check_namespace(-1), Err(ClientError::InvalidNamespace(-1)));
        assert_eq!(
            check_namespace(32_768),
            Err(ClientError::InvalidNamespace(32_768))
        );
        assert_eq!(check_namespace(10), Ok(10));
    }

    #[test]
    fn endpoints_without_scheme_are_plain_http() {
        let opts = ClientOptions::default();
        let target = build_endpoint("127.0.0.1:7400", &opts).unwrap();
        assert_eq!(target.endpoint.uri().to_string(), "http://127.0.0.1:7400/");
        assert!(target.tls.is_none());
        assert!(matches!(
            build_endpoint("http://bad host", &opts),
            Err(ClientError::Endpoint { .. })
        ));
    }

    #[test]
    fn https_endpoints_dial_the_plain_address_through_our_tls() {
        let opts = ClientOptions {
            // Any root will do: nothing connects here.
            extra_roots_pem: vec![
                rcgen::generate_simple_self_signed(vec!["ca".into()])
                    .unwrap()
                    .cert
                    .pem()
                    .into(),
            ],
            ..ClientOptions::default()
        };
        let target = build_endpoint("https://relay.example", &opts).unwrap();
        assert_eq!(target.endpoint.uri().to_string(), "http://relay.example:443/");
        assert_eq!(target.tls.map(|t| t.port()), Some(443));
    }

    #[test]
    fn a_bad_extra_root_fails_the_client_naming_it() {
        let opts = ClientOptions {
            extra_roots_pem: vec![b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec()],
            ..ClientOptions::default()
        };
        for endpoint in ["https://relay.example", "http://127.0.0.1:7400"] {
            let Err(ClientError::Endpoint { reason, .. }) = build_endpoint(endpoint, &opts) else {
                panic!("accepted a bad root for {endpoint}")
            };
            assert!(reason.starts_with("extra_roots_pem[0] "), "{reason}");
        }
    }

    #[tokio::test]
    async fn unreachable_relay_is_unavailable_after_bounded_retries() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = ClientOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
            connect_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        let client = RelayClient::connect_lazy(&format!("127.0.0.1:{port}"), opts).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(20), client.relay_info())
            .await
            .expect("bounded retries end");
        assert_eq!(err.unwrap_err().code(), Some(Code::Unavailable));
    }

    #[test]
    fn a_signed_unsubscribe_verifies_and_survives_its_encoding() {
        use prost::Message;
        let identity = Identity::create();
        let device_id = [3u8; 16];
        let before = unix_now();
        let req = signed_unsubscribe(&identity, &device_id);
        assert!((before..=unix_now()).contains(&req.ts));
        assert_eq!(req.account, identity.account());
        assert_eq!(req.device_id, device_id);
        let signed = sign::unsubscribe_bytes(&identity.account(), &device_id, req.ts);
        assert!(sign::verify(&identity.account(), &signed, &req.signature).is_ok());
        let stored = req.encode_to_vec();
        assert_eq!(UnsubscribeRequest::decode(stored.as_slice()).unwrap(), req);
    }

    #[tokio::test]
    async fn unsigned_store_to_owner_only_namespace_is_refused_locally() {
        let client = RelayClient::connect_lazy("127.0.0.1:9", ClientOptions::default()).unwrap();
        assert_eq!(
            client.store(&[0; 32], 10, b"x", 10_000).await.unwrap_err(),
            ClientError::OwnerOnlyNamespace(10)
        );
    }
}
