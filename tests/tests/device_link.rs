//! device-link's `Account` engine end to end against a real relay (issue 4, "Tests"):
//! restore by phrase, concurrent edits with a device offline, linking by QR code (nothing
//! but a hello before approval; decline, timeout, another relay, a root from another
//! device), a change reaching another device by push (mock APNs) and by polling, the
//! durable upload queue across a restart, and compaction keeping the stored config bounded.
//!
//! "Offline" is a TCP proxy in front of the relay that drops every connection while off.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tidings_device_link::{
    account::{
        Account, AccountError, IncomingLink, InspectedLink, LinkRequest, Progress, ProgressStage,
        RelaySettings,
    },
    client::{PushService, RelayClient, RetryPolicy},
    config::{
        Avatar, Change, Contact, ContactUpdate, Documents, NotificationMode, Previews, sync::CONFIG_NAMESPACE,
    },
    link::{LINK_NAMESPACE, LinkError},
};
use tidings_tests::{
    STEP, TestRelay,
    push::{APP_ID, PUSH_WAIT, PushRig, random_token},
    within,
};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

const KEY: [u8; 32] = [0x5a; 32];
const CONTACTS: usize = 1_000;
/// A long step: restores and syncs of a thousand contacts in a debug build.
const LONG: Duration = Duration::from_secs(60);

/// Quick retries, so calls through a dead proxy fail in well under a second.
fn settings(url: &str) -> RelaySettings {
    let mut s = RelaySettings::new(url);
    s.client.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    s.client.connect_timeout = Duration::from_secs(5);
    s
}

fn contact_id(i: usize) -> String {
    format!("01{i:064x}")
}

fn contact(i: usize) -> Contact {
    Contact {
        account_id: contact_id(i),
        name: format!("Contact {i}"),
        nickname: i.is_multiple_of(7).then(|| format!("nick {i}")),
        approved: i.is_multiple_of(2),
        blocked: i.is_multiple_of(97),
        muted_until: i.is_multiple_of(11).then_some(1_900_000_000_000 + i as u64),
    }
}

/// Device A: a new account with a profile, settings, `n` contacts and read markers, synced.
async fn account_with_contacts(dir: &Path, url: &str, n: usize) -> Account {
    let (a, phrase) = within(STEP, "create", Account::create(dir, &KEY, settings(url)))
        .await
        .expect("the account is created");
    assert_eq!(phrase.split(' ').count(), 12);
    within(STEP, "set profile", async {
        a.change(Change::DisplayName("Ada Lovelace".into()))
            .await
            .unwrap();
        a.change(Change::Avatar(Some(Avatar {
            url: "https://cdn.example/avatar/ada".into(),
            key: vec![7; 32],
        })))
        .await
        .unwrap();
        a.change(Change::Previews(Previews {
            show_sender: true,
            show_content: true,
        }))
        .await
        .unwrap();
    })
    .await;
    within(
        LONG,
        "add contacts",
        a.edit(|e| {
            for i in 0..n {
                e.apply(&Change::AddContact(contact(i)))?;
                e.apply(&Change::MarkRead {
                    conversation: format!("conv-{i}"),
                    up_to_ms: 1_700_000_000_000 + i as u64,
                })?;
            }
            e.apply(&Change::Pinned {
                conversation: "conv-1".into(),
                pinned: true,
            })?;
            e.apply(&Change::Priority {
                conversation: "conv-1".into(),
                priority: 5,
            })
        }),
    )
    .await
    .expect("the contacts are added");
    within(LONG, "sync A", a.sync()).await.expect("A syncs");
    assert_eq!(a.pending_uploads().unwrap(), 0);
    a
}

async fn restore(dir: &Path, url: &str, phrase: &str) -> (Account, Vec<Progress>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let account = within(
        LONG,
        "restore",
        Account::restore(dir, &KEY, settings(url), phrase, move |p| {
            log.lock().unwrap().push(p)
        }),
    )
    .await
    .expect("the account is restored");
    let progress = seen.lock().unwrap().clone();
    (account, progress)
}

/// Syncs every device twice around, then checks they all show the same documents.
async fn converge(devices: &[&Account]) -> Documents {
    for _ in 0..2 {
        for d in devices {
            within(LONG, "sync", d.sync()).await.expect("sync succeeds");
        }
    }
    let first = devices[0].documents();
    for d in &devices[1..] {
        assert!(d.documents() == first, "devices did not converge");
    }
    first
}

/// Config messages stored for `account`, and their bytes, asked of the store directly.
async fn stored_config(relay: &TestRelay, account: &Account) -> (usize, usize) {
    let now_ms = relay.relay().clock().now_ms();
    let page = within(
        STEP,
        "store listing",
        relay.store().get_messages(
            &tidings_relay::store::Account(account.account_key()),
            CONFIG_NAMESPACE as u32,
            0,
            100_000,
            now_ms,
        ),
    )
    .await
    .expect("the store answers");
    let bytes = page.messages.iter().map(|m| m.data.len()).sum();
    (page.messages.len(), bytes)
}

/// A TCP proxy in front of the relay that can be switched off: while off it drops every
/// connection, open or new, as a phone losing its network would.
struct Proxy {
    addr: SocketAddr,
    online: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let online = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (on, conns) = (Arc::clone(&online), Arc::clone(&connections));
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !on.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            online,
            connections,
            acceptor,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
        if !online {
            for task in self.connections.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.set_online(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_restored_by_phrase_converges_with_a_thousand_contacts() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), CONTACTS).await;
    let before = a.documents();
    assert_eq!(before.contacts.len(), CONTACTS);
    assert_eq!(before.conversations.len(), CONTACTS);

    let (b, progress) = restore(dir_b.path(), &relay.endpoint(), &a.recovery_phrase()).await;
    assert_eq!(b.account_id(), a.account_id());
    assert_ne!(b.device_id(), a.device_id());
    // B shows the account's documents right after the restore, before any further sync.
    assert!(b.documents() == before, "B restored other documents than A has");
    let last = progress.last().expect("progress was reported");
    assert_eq!(last.stage, ProgressStage::Done);
    assert!(last.messages > 0 && last.bytes > 0 && last.total == Some(last.messages));
    assert!(progress.iter().any(|p| p.stage == ProgressStage::Fetching));
    assert!(progress.windows(2).all(|w| w[0].bytes <= w[1].bytes));

    // B's first uploads (its announcement snapshot) carry the account, not an empty config.
    within(LONG, "sync A", a.sync()).await.unwrap();
    assert!(a.documents() == before, "B's restore changed the account");
    let docs = converge(&[&a, &b]).await;
    assert_eq!(docs.profile.display_name, "Ada Lovelace");
    assert_eq!(docs.contacts[0], contact(0));
    assert!(docs.settings.previews.show_content);

    // A third restore, from what the two devices left, converges too.
    let dir_c = tempfile::tempdir().unwrap();
    let (c, _) = restore(dir_c.path(), &relay.endpoint(), &a.recovery_phrase()).await;
    assert!(c.documents() == docs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_while_one_device_is_offline_converge() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let proxy = Proxy::start(relay.addr).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), CONTACTS).await;
    let (b, _) = restore(dir_b.path(), &proxy.url(), &a.recovery_phrase()).await;

    proxy.set_online(false);
    within(STEP, "B edits offline", async {
        assert!(
            b.change(Change::UpdateContact {
                account_id: contact_id(1).to_owned(),
                update: ContactUpdate {
                    name: Some("Renamed on B".into()),
                    ..ContactUpdate::default()
                }
            })
            .await
            .unwrap()
        );
        b.change(Change::Block {
            account_id: contact_id(2).to_owned(),
        })
        .await
        .unwrap();
        b.change(Change::RemoveContact {
            account_id: contact_id(3).to_owned(),
        })
        .await
        .unwrap();
        b.change(Change::MarkRead {
            conversation: "conv-10".into(),
            up_to_ms: 1_800_000_000_000,
        })
        .await
        .unwrap();
        b.change(Change::MarkUnread {
            conversation: "conv-11".into(),
        })
        .await
        .unwrap();
        b.change(Change::AddContact(contact(50_000))).await.unwrap();
        b.change(Change::NotificationMode(NotificationMode::Fast))
            .await
            .unwrap();
    })
    .await;
    assert_eq!(b.pending_uploads().unwrap(), 7, "B's edits wait in the queue");
    assert!(within(STEP, "B syncs offline", b.sync()).await.is_err());

    within(STEP, "A edits meanwhile", async {
        a.change(Change::UpdateContact {
            account_id: contact_id(1).to_owned(),
            update: ContactUpdate {
                nickname: Some(Some("set on A".into())),
                ..ContactUpdate::default()
            },
        })
        .await
        .unwrap();
        a.change(Change::RemoveContact {
            account_id: contact_id(4).to_owned(),
        })
        .await
        .unwrap();
        a.change(Change::MarkRead {
            conversation: "conv-10".into(),
            up_to_ms: 1_750_000_000_000,
        })
        .await
        .unwrap();
        a.change(Change::Pinned {
            conversation: "conv-12".into(),
            pinned: true,
        })
        .await
        .unwrap();
        a.change(Change::AddContact(contact(60_000))).await.unwrap();
    })
    .await;
    within(LONG, "sync A", a.sync()).await.unwrap();

    proxy.set_online(true);
    let docs = converge(&[&b, &a]).await;
    assert_eq!(b.pending_uploads().unwrap(), 0);
    let find = |id: &str| docs.contacts.iter().find(|c| c.account_id == id).cloned();
    let one = find(&contact_id(1)).expect("contact 1 stays");
    assert_eq!(
        (one.name.as_str(), one.nickname.as_deref()),
        ("Renamed on B", Some("set on A")),
        "field edits of both devices survive"
    );
    assert!(find(&contact_id(2)).expect("blocked, not gone").blocked);
    assert!(find(&contact_id(3)).is_none() && find(&contact_id(4)).is_none());
    assert!(find(&contact_id(50_000)).is_some() && find(&contact_id(60_000)).is_some());
    assert_eq!(docs.contacts.len(), CONTACTS);
    let conv = |id: &str| docs.conversations.iter().find(|c| c.id == id).cloned().unwrap();
    assert_eq!(
        conv("conv-10").last_read_ms,
        1_800_000_000_000,
        "read markers merge by maximum"
    );
    assert!(conv("conv-11").marked_unread && conv("conv-12").pinned);
    assert_eq!(docs.settings.notification_mode, NotificationMode::Fast);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_by_qr_code_converges() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (dir_a, dir_c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), CONTACTS).await;

    let request = Account::link_offer(settings(&relay.endpoint()), "Ada's tablet").expect("an offer");
    let qr = request.qr_payload();
    let mailbox = OneTimeMailbox::of(&relay, &request).await;
    let (request, incoming, inspected) = scan_and_wait(request, &a, &qr).await;
    assert_eq!(incoming.sas(), inspected.sas(), "both screens show the same code");
    assert_eq!(inspected.sas().len(), 6);
    assert_eq!(inspected.device_name(), "Ada's tablet");
    assert_eq!(inspected.relay_addr(), relay.endpoint());
    assert!(inspected.same_relay());
    assert_eq!(incoming.relay_addr(), relay.endpoint());

    // Before the approval the one-time mailbox holds the hello and nothing else, and
    // confirming on the new device finds nothing to adopt.
    assert_eq!(mailbox.kinds().await, vec![HELLO]);
    assert_eq!(mailbox.messages().await[0].len(), 33);
    let early = within(
        STEP,
        "confirm before approval",
        confirm(&incoming, SHORT, dir_c.path()),
    )
    .await;
    assert!(
        matches!(early, Err(AccountError::Link(LinkError::Timeout(_)))),
        "{early:?}"
    );
    assert!(
        Account::open(dir_c.path(), &KEY, settings(&relay.endpoint()))
            .await
            .is_err()
    );

    within(STEP, "approve", a.approve_link(&inspected))
        .await
        .expect("A sends the account");
    assert_eq!(mailbox.kinds().await, vec![HELLO, ROOT]);

    let progress = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&progress);
    let c = within(
        LONG,
        "confirm",
        incoming.confirm(LONG, dir_c.path(), &KEY, move |p| log.lock().unwrap().push(p)),
    )
    .await
    .expect("C adopts the account");
    assert_eq!(c.account_id(), a.account_id());
    assert!(
        c.documents() == a.documents(),
        "C pulled everything before anything else"
    );
    assert_eq!(
        progress.lock().unwrap().last().map(|p| p.stage),
        Some(ProgressStage::Done)
    );
    assert!(
        mailbox.kinds().await.is_empty(),
        "the one-time mailbox is cleaned"
    );
    drop(request);

    within(STEP, "C edits", c.change(Change::DisplayName("Ada on C".into())))
        .await
        .unwrap();
    let docs = converge(&[&a, &c]).await;
    assert_eq!(docs.profile.display_name, "Ada on C");
    assert_eq!(docs.contacts.len(), CONTACTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_link_sends_no_root_and_ends_with_a_typed_outcome() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (dir_a, dir_c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), 10).await;

    let request = Account::link_offer(settings(&relay.endpoint()), "Unknown phone").unwrap();
    let qr = request.qr_payload();
    let mailbox = OneTimeMailbox::of(&relay, &request).await;
    let (request, incoming, inspected) = scan_and_wait(request, &a, &qr).await;
    within(STEP, "decline", a.decline_link(inspected))
        .await
        .expect("A declines");
    assert_eq!(mailbox.kinds().await, vec![HELLO, DECLINE], "no root was sent");

    let outcome = within(STEP, "confirm", confirm(&incoming, LONG, dir_c.path())).await;
    assert!(
        matches!(outcome, Err(AccountError::Link(LinkError::Declined))),
        "{outcome:?}"
    );
    assert!(
        Account::open(dir_c.path(), &KEY, settings(&relay.endpoint()))
            .await
            .is_err()
    );
    assert!(
        mailbox.kinds().await.is_empty(),
        "the one-time mailbox is cleaned"
    );

    // The code stays valid: scanning it again starts a new handshake with a new code.
    let waiting = tokio::spawn(async move { request.wait(LONG).await.map(|i| i.sas().to_owned()) });
    let again = within(STEP, "inspect again", a.inspect_link(&qr)).await.unwrap();
    let sas = within(LONG, "wait again", waiting).await.unwrap().unwrap();
    assert_eq!(sas, again.sas());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_waits_time_out_with_a_typed_outcome_and_can_be_resumed() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (dir_a, dir_c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), 10).await;
    let request = Account::link_offer(settings(&relay.endpoint()), "Slow tablet").unwrap();
    let qr = request.qr_payload();

    // Nobody scans.
    let nobody = within(STEP, "wait for a scan", request.wait(SHORT)).await;
    assert!(
        matches!(nobody, Err(AccountError::Link(LinkError::Timeout(_)))),
        "{nobody:?}"
    );

    // Scanned, but not approved yet: the confirmation times out and can be repeated.
    let (_request, incoming, inspected) = scan_and_wait(request, &a, &qr).await;
    let pending = within(STEP, "confirm", confirm(&incoming, SHORT, dir_c.path())).await;
    assert!(
        matches!(pending, Err(AccountError::Link(LinkError::Timeout(_)))),
        "{pending:?}"
    );
    within(STEP, "approve", a.approve_link(&inspected)).await.unwrap();
    let c = within(LONG, "confirm again", confirm(&incoming, LONG, dir_c.path()))
        .await
        .expect("the approval is found");
    assert_eq!(c.account_id(), a.account_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_naming_another_relay_is_flagged() {
    tidings_tests::require_backend!();
    let (home, elsewhere) = (TestRelay::start().await, TestRelay::start().await);
    let dir_a = tempfile::tempdir().unwrap();
    let a = account_with_contacts(dir_a.path(), &home.endpoint(), 10).await;

    let request = Account::link_offer(settings(&elsewhere.endpoint()), "Eve's laptop").unwrap();
    let qr = request.qr_payload();
    let mailbox = OneTimeMailbox::of(&elsewhere, &request).await;
    let (_request, incoming, inspected) = scan_and_wait(request, &a, &qr).await;
    assert!(!inspected.same_relay(), "another relay is flagged");
    assert_eq!(inspected.relay_addr(), elsewhere.endpoint());
    assert_eq!(incoming.sas(), inspected.sas());
    // Only the hello went there.
    assert_eq!(mailbox.kinds().await, vec![HELLO]);
    within(STEP, "decline", a.decline_link(inspected)).await.unwrap();
    assert_eq!(mailbox.kinds().await, vec![HELLO, DECLINE]);

    // The same relay spelt another way is not flagged.
    let bare = home.endpoint().trim_start_matches("http://").to_owned();
    let request = Account::link_offer(settings(&bare), "Ada's phone").unwrap();
    let inspected = within(STEP, "inspect", a.inspect_link(&request.qr_payload()))
        .await
        .unwrap();
    assert!(inspected.same_relay());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_from_another_device_than_the_hellos_is_never_adopted() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (dir_a, dir_e, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), 10).await;
    let (e, _) = within(
        STEP,
        "create E",
        Account::create(dir_e.path(), &KEY, settings(&relay.endpoint())),
    )
    .await
    .unwrap();

    // A scans first, so the new device shows A's code; E scans too and approves.
    let request = Account::link_offer(settings(&relay.endpoint()), "Ada's tablet").unwrap();
    let qr = request.qr_payload();
    let (_request, incoming, from_a) = scan_and_wait(request, &a, &qr).await;
    let from_e = within(STEP, "E inspects", e.inspect_link(&qr)).await.unwrap();
    assert_ne!(from_e.sas(), incoming.sas());
    within(STEP, "E approves", e.approve_link(&from_e)).await.unwrap();

    let outcome = within(STEP, "confirm", confirm(&incoming, LONG, dir_c.path())).await;
    assert!(
        matches!(outcome, Err(AccountError::Link(LinkError::Mismatch))),
        "{outcome:?}"
    );
    assert!(
        Account::open(dir_c.path(), &KEY, settings(&relay.endpoint()))
            .await
            .is_err()
    );
    drop(from_a);
}

const SHORT: Duration = Duration::from_millis(300);
const HELLO: u8 = 0x01;
const ROOT: u8 = 0x02;
const DECLINE: u8 = 0x03;

/// The linked device `linked` inspects `qr` while the new device waits for the hello.
async fn scan_and_wait(
    request: LinkRequest,
    linked: &Account,
    qr: &str,
) -> (LinkRequest, IncomingLink, InspectedLink) {
    let waiting = tokio::spawn(async move {
        let incoming = request.wait(LONG).await.expect("the hello arrives");
        (request, incoming)
    });
    let inspected = within(STEP, "inspect", linked.inspect_link(qr))
        .await
        .expect("the linked device reads the code");
    let (request, incoming) = within(LONG, "wait for the hello", waiting).await.unwrap();
    (request, incoming, inspected)
}

async fn confirm(incoming: &IncomingLink, timeout: Duration, dir: &Path) -> Result<Account, AccountError> {
    incoming.confirm(timeout, dir, &KEY, |_| {}).await
}

/// The new device's one-time mailbox, read with its key, as anyone holding it could.
struct OneTimeMailbox {
    client: RelayClient,
    key: ed25519_dalek::SigningKey,
}

impl OneTimeMailbox {
    async fn of(relay: &TestRelay, request: &LinkRequest) -> OneTimeMailbox {
        let client = within(STEP, "connect", RelayClient::connect(&relay.endpoint()))
            .await
            .expect("the client connects");
        OneTimeMailbox {
            client,
            key: request.offer().mailbox_key().clone(),
        }
    }

    async fn messages(&self) -> Vec<Vec<u8>> {
        let page = within(
            STEP,
            "retrieve the one-time mailbox",
            self.client.retrieve(&self.key, LINK_NAMESPACE, 0, 100, 0),
        )
        .await
        .expect("the one-time mailbox is readable with its key");
        page.messages.into_iter().map(|m| m.data).collect()
    }

    /// The first byte of every message: what kind of link message it is.
    async fn kinds(&self) -> Vec<u8> {
        self.messages()
            .await
            .iter()
            .map(|m| m.first().copied().unwrap_or_default())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_another_device_by_push_and_by_polling() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let url = rig.relay().endpoint();
    let (dir_a, dir_b, dir_d) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = account_with_contacts(dir_a.path(), &url, 100).await;
    let (b, _) = restore(dir_b.path(), &url, &a.recovery_phrase()).await;
    converge(&[&a, &b]).await;

    // Fast Mode: B registers its token; A's next change arrives at the mock APNs.
    let token = random_token(PushService::Apns);
    let sub = within(STEP, "subscribe", b.subscribe(PushService::Apns, &token, APP_ID))
        .await
        .expect("B subscribes");
    assert!(sub.added);
    rig.settle().await;
    rig.apns.clear();
    within(
        STEP,
        "A renames",
        a.change(Change::DisplayName("Pushed name".into())),
    )
    .await
    .unwrap();
    let pushes = rig
        .apns
        .wait_for(1, PUSH_WAIT)
        .await
        .expect("a push for A's change");
    assert_eq!(pushes[0].token, token);
    assert_eq!(pushes[0].body["aps"]["content-available"], 1, "a background push");
    let enc = pushes[0].body["enc"].as_str().expect("the push carries enc");
    let outcome = within(LONG, "handle the push", b.handle_push(enc)).await.unwrap();
    assert!(outcome.config_changed && outcome.messages.is_empty());
    assert_eq!(b.profile().display_name, "Pushed name");

    // A message from another account reaches B by push, with its data, exactly once.
    let (d, _) = within(
        STEP,
        "create D",
        Account::create(dir_d.path(), &KEY, settings(&url)),
    )
    .await
    .unwrap();
    rig.settle().await;
    rig.apns.clear();
    within(STEP, "D sends", d.send(&a.account_id(), b"hello from D"))
        .await
        .unwrap();
    let pushes = rig
        .apns
        .wait_for(1, PUSH_WAIT)
        .await
        .expect("a push for the message");
    let enc = pushes[0].body["enc"].as_str().expect("the push carries enc");
    let outcome = within(STEP, "handle the push", b.handle_push(enc)).await.unwrap();
    assert_eq!(outcome.messages.len(), 1);
    assert_eq!(outcome.messages[0].data, b"hello from D");
    assert!(
        within(STEP, "B receives", b.receive(0)).await.unwrap().is_empty(),
        "not twice"
    );
    let on_a = within(STEP, "A receives", a.receive(0)).await.unwrap();
    assert_eq!(on_a.len(), 1, "A, not subscribed, polls it");
    assert_eq!(on_a[0].hash, outcome.messages[0].hash);
    assert!(within(STEP, "A again", a.receive(0)).await.unwrap().is_empty());

    // Slow Mode: B unsubscribes and long-polls; A's next change wakes it.
    assert!(within(STEP, "unsubscribe", b.unsubscribe()).await.unwrap());
    within(LONG, "B catches up", b.sync()).await.unwrap();
    rig.settle().await;
    rig.apns.clear();
    let poller = b.clone();
    let polling = tokio::spawn(async move { poller.sync_wait(30_000).await });
    within(
        STEP,
        "A renames again",
        a.change(Change::DisplayName("Polled name".into())),
    )
    .await
    .unwrap();
    let changed = within(LONG, "B's long-poll", polling)
        .await
        .unwrap()
        .expect("sync_wait");
    assert!(changed);
    assert_eq!(b.profile().display_name, "Polled name");
    rig.settle().await;
    assert!(rig.apns.attempts().is_empty(), "no push after unsubscribing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_uploads_survive_a_restart() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let proxy = Proxy::start(relay.addr).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), 10).await;
    let (b, _) = restore(dir_b.path(), &proxy.url(), &a.recovery_phrase()).await;

    // The network goes away in the middle of B's uploads, and the app is killed.
    proxy.set_online(false);
    within(STEP, "B edits", async {
        b.change(Change::DisplayName("Written before the crash".into()))
            .await
            .unwrap();
        b.edit(|e| {
            for i in 100..150 {
                e.apply(&Change::AddContact(contact(i)))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    })
    .await;
    let queued = b.pending_uploads().unwrap();
    assert!(queued >= 2, "{queued}");
    let shown = b.documents();
    drop(b);

    proxy.set_online(true);
    let b = within(
        STEP,
        "reopen B",
        Account::open(dir_b.path(), &KEY, settings(&proxy.url())),
    )
    .await
    .expect("B reopens");
    assert_eq!(b.pending_uploads().unwrap(), queued, "the queue survived");
    assert!(b.documents() == shown, "so did the local edits");
    let report = within(LONG, "B syncs", b.sync_report()).await.unwrap();
    assert_eq!(report.flushed, queued);
    assert_eq!(b.pending_uploads().unwrap(), 0);
    let docs = converge(&[&a, &b]).await;
    assert_eq!(docs.profile.display_name, "Written before the crash");
    assert_eq!(docs.contacts.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_stored_config_bounded() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let dir_a = tempfile::tempdir().unwrap();
    let a = account_with_contacts(dir_a.path(), &relay.endpoint(), 200).await;
    let max_deltas = a.relay_settings().sync.max_deltas;
    let mut compactions = 0;
    let mut most = 0;
    for round in 0..12 {
        within(LONG, "edits", async {
            for i in 0..25u64 {
                let n = round * 25 + i;
                a.change(Change::MarkRead {
                    conversation: format!("conv-{}", n % 40),
                    up_to_ms: 1_800_000_000_000 + n,
                })
                .await
                .unwrap();
            }
        })
        .await;
        let report = within(LONG, "sync", a.sync_report()).await.unwrap();
        assert_eq!(report.compaction_error, None);
        if report.snapshot.is_some() && report.deleted > 0 {
            compactions += 1;
        }
        let (count, _) = stored_config(&relay, &a).await;
        most = most.max(count);
        let chunks = a.config_inventory().snapshot_bytes.div_ceil(65_536);
        assert!(
            count <= max_deltas + 1 + chunks,
            "round {round}: {count} config messages stored"
        );
    }
    assert!(compactions >= 3, "only {compactions} compactions in 300 edits");
    assert!(most < 300);

    // What is left restores a device that converges.
    let dir_b = tempfile::tempdir().unwrap();
    let (b, _) = restore(dir_b.path(), &relay.endpoint(), &a.recovery_phrase()).await;
    assert!(b.documents() == a.documents());
    let last = b.conversation("conv-19").expect("conversation 19");
    assert_eq!(last.last_read_ms, 1_800_000_000_000 + 299);
}
