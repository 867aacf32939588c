//! The Mailbox gRPC service (Slow Mode): Store, Retrieve (with long-poll) and Delete.
//!
//! Each call validates its request ([`validate`]), then talks to the [`Store`]. A Store
//! that added a message wakes the long-polls parked on that mailbox ([`Waiters`]).

pub mod validate;

use std::{sync::Arc, time::Duration};

use tidings_proto::{
    hash::message_hash,
    namespace,
    v1::{
        self, DeleteRequest, DeleteResponse, RetrieveRequest, RetrieveResponse, StoreRequest, StoreResponse,
        mailbox_server::Mailbox,
    },
};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    clock::Clock,
    config::{Limits, RateLimits},
    keys::RelayKeys,
    limits::{Guards, Op, Spender, exhausted},
    longpoll::Waiters,
    metrics::Metrics,
    store::{self, NewMessage, Page, Store, StoreError, StoredMessage},
};

/// Bytes a message costs in a Retrieve answer beyond its data (hash, seq, times, tags).
const MESSAGE_OVERHEAD: usize = 128;
/// Messages read from the store per call while filling a page.
const READ_CHUNK: u32 = 64;
/// How far a Retrieve counts `remaining`: at most this many pages of the size it returns
/// (so the count costs at most ten times the page read)...
const REMAINING_PAGES: u32 = 10;
/// ...and never more than this many messages, whatever the page size.
const REMAINING_CAP: u32 = 10_000;
/// The retry hint of a Store into a full mailbox: room comes only when the owner
/// deletes or messages expire, so there is no point in trying again soon.
const FULL_MAILBOX_RETRY: Duration = Duration::from_secs(60);

/// The Mailbox service.
#[derive(Clone)]
pub struct MailboxService {
    store: Arc<dyn Store>,
    keys: Arc<RelayKeys>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    waiters: Arc<Waiters>,
    shutdown: CancellationToken,
    push_wake: Arc<Notify>,
    guards: Arc<Guards>,
    metrics: Option<Arc<Metrics>>,
}

impl MailboxService {
    /// A service over `store`. Cancelling `shutdown` releases parked long-polls with
    /// an empty answer; `push_wake` is notified when a Store enqueued push jobs.
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<RelayKeys>,
        limits: Limits,
        clock: Arc<dyn Clock>,
        waiters: Arc<Waiters>,
        shutdown: CancellationToken,
        push_wake: Arc<Notify>,
    ) -> Self {
        // Without `with_guards`, only the caps of `limits` apply, no rates.
        let rates = RateLimits {
            enabled: false,
            ..RateLimits::default()
        };
        let guards = Arc::new(Guards::new(&limits, &rates));
        Self {
            store,
            keys,
            limits,
            clock,
            waiters,
            shutdown,
            push_wake,
            guards,
            metrics: None,
        }
    }

    /// Records message sizes in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The answer to a Retrieve after `after_seq`, its size recorded.
    async fn retrieved(
        &self,
        account: &[u8; 32],
        namespace: u32,
        after_seq: u64,
        page: Page,
    ) -> Result<Response<RetrieveResponse>, Status> {
        if let Some(m) = &self.metrics {
            m.retrieved(page.messages.iter().map(|msg| msg.data.len()).sum());
        }
        let remaining = self.remaining(account, namespace, after_seq, &page).await?;
        Ok(Response::new(page_response(page, remaining)))
    }

    /// How many unexpired messages follow the page, counted only when it says `more` (a
    /// last page has none after it, and most pages are last pages) and only up to
    /// [`REMAINING_PAGES`] pages of its size and [`REMAINING_CAP`]: a restore that pages
    /// through a big mailbox pays a bounded multiple of its reads, not a count per page of
    /// everything behind it.
    async fn remaining(
        &self,
        account: &[u8; 32],
        namespace: u32,
        after_seq: u64,
        page: &Page,
    ) -> Result<u64, Status> {
        if !page.more {
            return Ok(0);
        }
        let last = page.messages.last().map_or(after_seq, |m| m.seq);
        let page_len = u32::try_from(page.messages.len()).unwrap_or(u32::MAX);
        let at_most = page_len.max(1).saturating_mul(REMAINING_PAGES).min(REMAINING_CAP);
        let n = self
            .store
            .count_messages(
                &store::Account(*account),
                namespace,
                last,
                self.clock.now_ms(),
                at_most,
            )
            .await
            .map_err(storage_status)?;
        Ok(u64::from(n))
    }

    /// Applies these rate limits and long-poll caps (shared with the Relay service).
    #[must_use]
    pub fn with_guards(mut self, guards: Arc<Guards>) -> Self {
        self.guards = guards;
        self
    }

    /// Refuses a Store into a public-deposit mailbox holding `max_messages_per_mailbox` unexpired
    /// messages, unless it repeats one of them (which changes nothing and is answered as
    /// the duplicate it is). Concurrent Stores may overshoot the cap by a few.
    async fn check_room(
        &self,
        account: &[u8; 32],
        namespace: u32,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> Result<(), Status> {
        let max = self.limits.max_messages_per_mailbox;
        // Counting costs up to `max` entries; the span is two lookups and bounds the count.
        let span = self
            .store
            .seq_span(&store::Account(*account), namespace)
            .await
            .map_err(storage_status)?;
        if span < u64::from(max) {
            return Ok(());
        }
        let held = self
            .store
            .count_messages(&store::Account(*account), namespace, 0, now_ms, max)
            .await
            .map_err(storage_status)?;
        if held < max {
            return Ok(());
        }
        let stored = self
            .store
            .get_message(&store::Account(*account), namespace, hash)
            .await
            .map_err(storage_status)?;
        if stored.is_some_and(|m| m.expires_ms > now_ms) {
            return Ok(());
        }
        Err(exhausted(
            format!(
                "Store: mailbox is full ({max} messages, the most one namespace of an account holds); \
                 room comes when the owner deletes messages or they expire"
            ),
            FULL_MAILBOX_RETRY,
        ))
    }

    /// Reads up to `limit` messages after `after_seq` in chunks, stopping early (with
    /// `more`) once the answer's byte budget is spent: memory per call stays near the
    /// budget however large `limit` and the messages are.
    async fn read_page(
        &self,
        account: &[u8; 32],
        namespace: u32,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page, Status> {
        let mut page = PageBuilder::new(limit, self.limits.max_response_bytes as usize);
        let mut cursor = after_seq;
        loop {
            let want = page.room().min(READ_CHUNK);
            let chunk = self
                .store
                .get_messages(
                    &store::Account(*account),
                    namespace,
                    cursor,
                    want,
                    self.clock.now_ms(),
                )
                .await
                .map_err(storage_status)?;
            cursor = chunk.messages.last().map_or(cursor, |m| m.seq);
            let fitted = page.extend(chunk.messages);
            if !fitted || !chunk.more || page.room() == 0 {
                return Ok(page.finish(!fitted || chunk.more));
            }
        }
    }
}

/// Collects a Retrieve page under a message count and byte budget.
#[derive(Debug)]
pub struct PageBuilder {
    messages: Vec<StoredMessage>,
    limit: u32,
    used: usize,
    budget: usize,
}

impl PageBuilder {
    /// An empty page of at most `limit` messages and about `budget` bytes.
    pub fn new(limit: u32, budget: usize) -> Self {
        Self {
            messages: Vec::new(),
            limit,
            used: 0,
            budget,
        }
    }

    /// How many more messages the page may take.
    pub fn room(&self) -> u32 {
        // messages.len() never exceeds limit, a u32.
        self.limit
            .saturating_sub(u32::try_from(self.messages.len()).unwrap_or(u32::MAX))
    }

    /// Adds messages in order; returns `false` when one did not fit the byte budget (it
    /// and the rest are left for the next page). The first message always fits, since
    /// messages are size-limited far below the budget.
    pub fn extend(&mut self, messages: Vec<StoredMessage>) -> bool {
        for m in messages {
            let cost = m.data.len() + MESSAGE_OVERHEAD;
            if self.room() == 0 || (!self.messages.is_empty() && self.used + cost > self.budget) {
                return false;
            }
            self.used += cost;
            self.messages.push(m);
        }
        true
    }

    /// The page; `more` says whether unexpired messages remain after it.
    pub fn finish(self, more: bool) -> Page {
        Page {
            messages: self.messages,
            more,
        }
    }
}

/// The wire form of a page followed by `remaining` messages.
pub fn page_response(page: Page, remaining: u64) -> RetrieveResponse {
    let messages = page
        .messages
        .into_iter()
        .map(|m| v1::StoredMessage {
            hash: m.hash.to_vec(),
            seq: m.seq,
            data: m.data,
            created_ms: m.created_ms,
            expires_ms: m.expires_ms,
        })
        .collect();
    RetrieveResponse {
        messages,
        more: page.more,
        remaining,
    }
}

#[tonic::async_trait]
impl Mailbox for MailboxService {
    async fn store(&self, request: Request<StoreRequest>) -> Result<Response<StoreResponse>, Status> {
        self.guards.rates.check_ip(Op::Store, &request)?;
        let now_ms = self.clock.now_ms();
        let v = validate::store(request.into_inner(), &self.limits, now_ms.div_euclid(1000))?;
        // Validation checked the owner's signature for owner-only namespaces.
        let spender = if namespace::is_owner_only(i32::try_from(v.namespace).unwrap_or(i32::MAX)) {
            Spender::Owner
        } else {
            Spender::Anyone
        };
        self.guards.rates.check_account(Op::Store, &v.account, spender)?;
        let hash = message_hash(&v.account, v.namespace, &v.data);
        // The cap is against deposit spam. The owner's own namespaces are bounded by the
        // owner's rate limit and TTLs, and a cap there could lock an account out of its
        // config: compacting writes a snapshot before it deletes what the snapshot covers.
        if spender == Spender::Anyone {
            self.check_room(&v.account, v.namespace, &hash, now_ms).await?;
        }
        let size = v.data.len();
        let msg = NewMessage {
            account: store::Account(v.account),
            account_index: self.keys.account_index(&v.account),
            namespace: v.namespace,
            hash,
            data: v.data,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(v.ttl_ms),
        };
        let out = self.store.put_message(msg).await.map_err(storage_status)?;
        if let Some(m) = &self.metrics {
            m.stored(size);
        }
        if !out.duplicate {
            self.waiters.notify_arrival(&v.account, v.namespace);
        }
        if out.jobs_enqueued > 0 {
            self.push_wake.notify_one();
        }
        tracing::debug!(
            account = %self.keys.fingerprint(&v.account),
            namespace = v.namespace,
            seq = out.seq,
            bytes = size,
            duplicate = out.duplicate,
            "stored"
        );
        Ok(Response::new(StoreResponse {
            hash: hash.to_vec(),
            seq: out.seq,
            expires_ms: out.expires_ms,
            duplicate: out.duplicate,
        }))
    }

    async fn retrieve(
        &self,
        request: Request<RetrieveRequest>,
    ) -> Result<Response<RetrieveResponse>, Status> {
        self.guards.rates.check_ip(Op::Retrieve, &request)?;
        let v = validate::retrieve(request.get_ref(), &self.limits, self.clock.now_s())?;
        self.guards
            .rates
            .check_account(Op::Retrieve, &v.account, Spender::Owner)?;
        let page = self
            .read_page(&v.account, v.namespace, v.after_seq, v.limit)
            .await?;
        if !page.messages.is_empty() || v.wait_ms == 0 || self.shutdown.is_cancelled() {
            return self.retrieved(&v.account, v.namespace, v.after_seq, page).await;
        }
        // Only a call that would park needs a slot; what is there was answered above.
        let _slot = self.guards.long_polls.park(&v.account)?;
        let deadline = Instant::now() + Duration::from_millis(u64::from(v.wait_ms));
        tracing::debug!(account = %self.keys.fingerprint(&v.account), namespace = v.namespace, wait_ms = v.wait_ms, "long-poll parked");
        let waited = self
            .waiters
            .wait_for((v.account, v.namespace), deadline, &self.shutdown, || async {
                let page = self
                    .read_page(&v.account, v.namespace, v.after_seq, v.limit)
                    .await?;
                Ok::<_, Status>((!page.messages.is_empty()).then_some(page))
            })
            .await?;
        // A deadline or a shutdown answers "nothing new" (the client simply polls again).
        self.retrieved(&v.account, v.namespace, v.after_seq, waited.unwrap_or_default())
            .await
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let v = validate::delete(request.get_ref(), &self.limits, self.clock.now_s())?;
        let deleted = self
            .store
            .delete_messages(&store::Account(v.account), v.namespace, &v.hashes)
            .await
            .map_err(storage_status)?;
        Ok(Response::new(DeleteResponse { deleted }))
    }
}

/// The status a storage failure becomes: UNAVAILABLE when the caller may retry later
/// (nothing was half-written), INTERNAL for corruption (logged, details withheld).
pub fn storage_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable { reason: why, .. } => {
            tracing::warn!(%why, "storage unavailable");
            Status::unavailable(format!("storage cannot take requests now ({why}); retry later"))
        }
        StoreError::Closed => Status::unavailable("the relay is shutting down; retry later"),
        StoreError::Corrupt { reason: why, .. } => {
            tracing::error!(%why, "storage corrupt");
            Status::internal("storage error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, len: usize) -> StoredMessage {
        StoredMessage {
            hash: [seq as u8; 32],
            seq,
            data: vec![0; len],
            created_ms: 1,
            expires_ms: 2,
        }
    }

    #[test]
    fn pages_stop_at_the_byte_budget() {
        let mut p = PageBuilder::new(10, 2300);
        assert!(!p.extend(vec![msg(1, 1000), msg(2, 1000), msg(3, 1000)]));
        let page = p.finish(true);
        assert_eq!(
            page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );

        let mut p = PageBuilder::new(10, 1 << 20);
        assert!(p.extend(vec![msg(1, 1000), msg(2, 1000)]));
        assert_eq!(p.room(), 8);
        let mut p = PageBuilder::new(10, 100);
        assert!(p.extend(vec![msg(1, 5000)]), "the first message always fits");
        assert!(!p.extend(vec![msg(2, 1)]));
    }

    #[test]
    fn pages_stop_at_the_limit() {
        let mut p = PageBuilder::new(2, 1 << 20);
        assert!(!p.extend(vec![msg(1, 1), msg(2, 1), msg(3, 1)]));
        assert_eq!(p.room(), 0);
        let r = page_response(p.finish(true), 7);
        assert_eq!((r.messages.len(), r.more, r.remaining), (2, true, 7));
        assert_eq!(r.messages[1].hash, vec![2u8; 32]);
    }

    /// A service over a fresh embedded store, on a clock the test moves.
    fn service(dir: &std::path::Path, clock: crate::clock::ManualClock) -> MailboxService {
        let store = crate::store::redb::RedbStore::open(dir, crate::store::linkage::test_keys()).unwrap();
        MailboxService::new(
            Arc::new(store),
            Arc::new(RelayKeys::from_secret(&[9; 32])),
            Limits::default(),
            Arc::new(clock),
            Arc::new(Waiters::new()),
            CancellationToken::new(),
            Arc::new(Notify::new()),
        )
    }

    #[tokio::test]
    async fn retrieve_reports_what_remains_after_a_full_page() {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::clock::ManualClock::starting_now();
        let mailbox = service(dir.path(), clock.clone());
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let account = key.verifying_key().to_bytes();
        for i in 0..25u8 {
            // The last one expires first.
            let ttl_ms = if i == 24 { 10_000 } else { 0 };
            let req = StoreRequest {
                account: account.to_vec(),
                data: vec![i],
                ttl_ms,
                ..StoreRequest::default()
            };
            mailbox.store(Request::new(req)).await.unwrap();
        }
        let retrieve = |after_seq: u64, limit: u32| {
            let ts = clock.now_ms().div_euclid(1000);
            let req = RetrieveRequest {
                account: account.to_vec(),
                after_seq,
                limit,
                ts,
                signature: tidings_proto::sign::sign(
                    &key,
                    &tidings_proto::sign::retrieve_bytes(&account, 0, ts),
                )
                .to_vec(),
                ..RetrieveRequest::default()
            };
            let mailbox = mailbox.clone();
            async move { mailbox.retrieve(Request::new(req)).await.unwrap().into_inner() }
        };
        let shape = |r: &RetrieveResponse| (r.messages.len(), r.more, r.remaining);
        assert_eq!(shape(&retrieve(0, 10).await), (10, true, 15));
        assert_eq!(shape(&retrieve(20, 10).await), (5, false, 0), "a last page: none");
        // Counted up to ten pages of the page's size: a lower bound beyond that.
        assert_eq!(shape(&retrieve(0, 1).await), (1, true, 10));
        assert_eq!(shape(&retrieve(20, 1).await), (1, true, 4));
        clock.advance_ms(10_000);
        assert_eq!(
            shape(&retrieve(20, 1).await),
            (1, true, 3),
            "expired: not counted"
        );
        assert_eq!(shape(&retrieve(20, 4).await), (4, false, 0));
    }

    #[test]
    fn storage_errors_map_to_retryable_statuses() {
        assert_eq!(
            storage_status(StoreError::Closed).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            storage_status(StoreError::unavailable("disk full")).code(),
            tonic::Code::Unavailable
        );
        let corrupt = storage_status(StoreError::corrupt("bad row /secret/path"));
        assert_eq!(corrupt.code(), tonic::Code::Internal);
        assert!(!corrupt.message().contains("secret"));
    }
}
