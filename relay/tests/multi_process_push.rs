//! Three `tidings-relay` processes on one PostgreSQL schema push through APNs and FCM
//! (the mocks of `tidings-mock-push`, one pair per node) while clients spread over the
//! nodes store messages for subscribed devices; one node is killed with `kill -9` mid-load.
//! The other two take its claimed jobs over once its lease runs out: every acknowledged
//! message reaches every subscribed device, and none twice beyond the crash window the
//! notifier documents. Skips visibly without PostgreSQL.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ed25519_dalek::SigningKey;
use support::{
    APP_ID, Device, KEY_ID, STEP, Schema, TEAM_ID, apps_toml, channel, connect, now_ms, serve, subscribe,
    within,
};
use tidings_mock_push::{
    ApnsKey, ApnsMockConfig, FcmMockConfig, MockApns, MockFcm, ServiceAccount, Transport,
};
use tidings_proto::{
    push::decrypt_push,
    v1::{PushService, StoreRequest, mailbox_client::MailboxClient},
};
use tokio::process::Child;
use tonic::transport::Channel;

const PROJECT: &str = "tidings-multi-process";
const NODES: usize = 3;
const ACCOUNTS: u8 = 3;
const PER_ACCOUNT: usize = 30;
/// The node killed mid-load.
const VICTIM: usize = 2;
/// The victim's lease: short, so the survivors take its jobs over soon after the kill.
/// (Push settings are per node: the lease a job carries is its claimer's.)
const VICTIM_LEASE_MS: i64 = 4_000;
/// The survivors' lease: long, so that on this busy machine no survivor ever loses a
/// lease while alive; the only takeover in this test is of the dead node's jobs.
const SURVIVOR_LEASE_MS: i64 = 60_000;
/// How long the victim's providers take to answer, so that it has pushes in flight.
const VICTIM_PROVIDER_DELAY: Duration = Duration::from_millis(200);

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(limit, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out: {what}"));
}

/// One node's own mock APNs and FCM: which node sent a push is where it arrived.
struct Providers {
    apns: MockApns,
    fcm: MockFcm,
}

impl Providers {
    async fn start(key: &ApnsKey, account: &ServiceAccount) -> Providers {
        let apns = MockApns::start(ApnsMockConfig::new(key, APP_ID, Transport::H2c))
            .await
            .unwrap();
        let fcm = MockFcm::start(FcmMockConfig::new(account, Transport::H2c))
            .await
            .unwrap();
        Providers { apns, fcm }
    }

    /// Push requests received (answered or not).
    fn received(&self) -> u64 {
        self.apns.requests() + self.fcm.requests() - self.fcm.token_requests()
    }

    fn set_delay(&self, delay: Option<Duration>) {
        self.apns.set_delay(delay);
        self.fcm.set_delay(delay);
    }
}

/// One relay process serving `dir/relay.toml`.
struct Node {
    child: Child,
    grpc: SocketAddr,
}

/// Writes the node's config (PostgreSQL, its own providers, the given lease) and starts it.
async fn spawn_node(
    dir: &Path,
    postgres_url: &str,
    key: &ApnsKey,
    account: &ServiceAccount,
    providers: &Providers,
    lease_ms: i64,
) -> Node {
    let key_file = key.write_p8(dir).unwrap();
    let mut account = account.clone();
    // Each node gets its OAuth tokens from its own mock.
    account.token_uri = providers.fcm.token_uri();
    let sa_file = account.write_json(dir).unwrap();
    let text = format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = {data:?}

[storage]
backend = "postgres"
postgres_url = "{postgres_url}"

[push]
concurrency = 4
timeout_ms = {timeout}
lease_ms = {lease_ms}
poll_interval_ms = 50

{apps}"#,
        data = dir.join("data"),
        // The config requires a lease of at least twice the provider timeout.
        timeout = lease_ms / 2,
        apps = apps_toml(
            &key_file,
            &sa_file,
            &providers.apns.endpoint(),
            &providers.fcm.endpoint()
        ),
    );
    let config = dir.join("relay.toml");
    std::fs::write(&config, text).unwrap();
    let (child, announced) = serve(&config, &dir.join("relay.log"), "info,tidings_relay=debug").await;
    Node {
        child,
        grpc: announced.grpc,
    }
}

/// A device of one of the test's accounts: (account index, device).
type Installed = (usize, Device);

/// Acknowledged messages as (account, hash).
type Acked = HashSet<(usize, Vec<u8>)>;

/// Stores the account's messages one after another, each on the next live node; a failed
/// Store is retried on another node (Store is idempotent, and a message gets one push job
/// per device however often it is stored). Records each acknowledged hash.
async fn write_account(
    key: SigningKey,
    clients: Vec<MailboxClient<Channel>>,
    dead: Arc<[AtomicBool; NODES]>,
    stored: Arc<AtomicUsize>,
    acked: Arc<Mutex<Acked>>,
    account: usize,
) {
    let mut node = account;
    for i in 0..PER_ACCOUNT {
        let req = StoreRequest {
            account: key.verifying_key().to_bytes().to_vec(),
            namespace: 0,
            data: format!("message {i:03}").into_bytes(),
            ..Default::default()
        };
        let mut tries = 0;
        let hash = loop {
            node = (node + 1) % NODES;
            if dead[node].load(Ordering::SeqCst) {
                continue;
            }
            let mut client = clients[node].clone();
            let call = tokio::time::timeout(Duration::from_secs(10), client.store(req.clone()));
            if let Ok(Ok(reply)) = call.await {
                break reply.into_inner().hash;
            }
            tries += 1;
            assert!(tries < 20, "message {i} could not be stored");
        };
        acked.lock().unwrap().insert((account, hash));
        stored.fetch_add(1, Ordering::SeqCst);
    }
}

/// How often each (token, hash) arrived at these providers, decrypting every push with the
/// key of the device it was addressed to.
fn deliveries(providers: &[&Providers], devices: &[Installed]) -> HashMap<(String, Vec<u8>), usize> {
    let keys: HashMap<&str, &[u8; 32]> = devices
        .iter()
        .map(|(_, d)| (d.token.as_str(), &d.push_key))
        .collect();
    let mut counts = HashMap::new();
    let mut count = |token: &str, enc: &str| {
        let key = keys
            .get(token)
            .unwrap_or_else(|| panic!("a push to unknown token {token}"));
        let note = decrypt_push(key, enc).expect("decrypts with the device's key");
        *counts.entry((token.to_owned(), note.hash)).or_insert(0) += 1;
    };
    for p in providers {
        for push in p.apns.delivered() {
            count(&push.token, push.body["enc"].as_str().unwrap());
        }
        for push in p.fcm.delivered() {
            count(&push.token, push.data["enc"].as_str());
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_push_every_message_once_and_take_over_after_kill_9() {
    let Some(schema) = Schema::create("multi_process_push").await else {
        return;
    };
    let db = connect(schema.server_url()).await.unwrap();
    let url = schema.url().to_owned();
    let apns_key = ApnsKey::generate(KEY_ID, TEAM_ID);
    let service_account = ServiceAccount::generate(PROJECT);
    let mut providers = Vec::new();
    for _ in 0..NODES {
        providers.push(Providers::start(&apns_key, &service_account).await);
    }
    providers[VICTIM].set_delay(Some(VICTIM_PROVIDER_DELAY));

    let dirs: Vec<_> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let lease = |i: usize| {
        if i == VICTIM {
            VICTIM_LEASE_MS
        } else {
            SURVIVOR_LEASE_MS
        }
    };
    // The first node applies the migrations and writes the relay key; the others share
    // that key, as nodes of one deployment must (registrations are sealed to it).
    let mut nodes = vec![
        spawn_node(
            dirs[0].path(),
            &url,
            &apns_key,
            &service_account,
            &providers[0],
            lease(0),
        )
        .await,
    ];
    let relay_key = dirs[0].path().join("data").join("relay.key");
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::copy(&relay_key, dir.path().join("data").join("relay.key")).unwrap();
        nodes.push(
            spawn_node(
                dir.path(),
                &url,
                &apns_key,
                &service_account,
                &providers[i],
                lease(i),
            )
            .await,
        );
    }
    let mut channels = Vec::new();
    for node in &nodes {
        channels.push(channel(node.grpc).await);
    }

    // Every account has an iPhone and an Android phone, subscribed through different nodes.
    let accounts: Vec<_> = (0..ACCOUNTS)
        .map(|a| SigningKey::from_bytes(&[a + 60; 32]))
        .collect();
    let mut devices = Vec::new();
    for (a, owner) in accounts.iter().enumerate() {
        for (k, service) in [PushService::Apns, PushService::Fcm].into_iter().enumerate() {
            let device = Device::new(service);
            subscribe(channels[(a + k) % NODES].clone(), owner, &device).await;
            devices.push((a, device));
        }
    }

    let clients: Vec<_> = channels.iter().cloned().map(MailboxClient::new).collect();
    let dead = Arc::new([const { AtomicBool::new(false) }; NODES]);
    let stored = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let writers: Vec<_> = accounts
        .iter()
        .enumerate()
        .map(|(a, key)| {
            tokio::spawn(write_account(
                key.clone(),
                clients.clone(),
                dead.clone(),
                stored.clone(),
                acked.clone(),
                a,
            ))
        })
        .collect();

    let total = usize::from(ACCOUNTS) * PER_ACCOUNT;
    within("a third of the load", async {
        while stored.load(Ordering::SeqCst) < total / 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Kill the victim while it certainly holds a claimed job: from now on its providers
    // never answer, so a request that arrives after this is in flight until the kill
    // (its provider timeout is seconds away, the kill milliseconds). Extra Stores through
    // the victim make sure it claims something: it wakes its own notifier at once, the
    // others only when PostgreSQL's notification reaches them.
    let before = providers[VICTIM].received();
    providers[VICTIM].set_delay(Some(Duration::from_secs(3600)));
    let mut nudges = 0;
    let mut victim = clients[VICTIM].clone();
    wait_until("the victim sends a push", STEP, async || {
        if providers[VICTIM].received() > before {
            return true;
        }
        let req = StoreRequest {
            account: accounts[0].verifying_key().to_bytes().to_vec(),
            namespace: 0,
            data: format!("nudge {nudges}").into_bytes(),
            ..Default::default()
        };
        let hash = within("a Store via the victim", victim.store(req))
            .await
            .unwrap()
            .into_inner()
            .hash;
        acked.lock().unwrap().insert((0, hash));
        nudges += 1;
        false
    })
    .await;
    support::signal(&nodes[VICTIM].child, libc::SIGKILL);
    dead[VICTIM].store(true, Ordering::SeqCst);
    within("the victim dies", nodes[VICTIM].child.wait())
        .await
        .unwrap();

    // The jobs the victim held when it died, per device: only the survivors' leases are
    // longer than a minute, so any job whose lease ends sooner is the victim's.
    let orphans: HashMap<Vec<u8>, i64> = db
        .query(
            &format!(
                "SELECT device_id, count(*) FROM {}.push_jobs
                 WHERE lease_owner IS NOT NULL AND lease_until_ms < $1 GROUP BY device_id",
                schema.name()
            ),
            &[&(now_ms() + SURVIVOR_LEASE_MS / 2)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!orphans.is_empty(), "the victim held claimed jobs when it died");

    for writer in writers {
        within("writers finish", writer).await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), total + nudges, "every message acknowledged");
    // (token, hash) of every push that must arrive: each message to each device of its account.
    let expected: HashSet<(String, Vec<u8>)> = devices
        .iter()
        .flat_map(|(account, d)| {
            acked
                .iter()
                .filter(|(a, _)| *a == *account)
                .map(|(_, h)| (d.token.clone(), h.clone()))
        })
        .collect();
    assert_eq!(expected.len(), acked.len() * 2);

    // Every push arrives (the survivors take the victim's jobs over after its lease)...
    let all: Vec<&Providers> = providers.iter().collect();
    let missing = |got: &HashMap<(String, Vec<u8>), usize>| -> usize {
        expected.iter().filter(|p| !got.contains_key(*p)).count()
    };
    let delivered = tokio::time::timeout(Duration::from_secs(180), async {
        while missing(&deliveries(&all, &devices)) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if delivered.is_err() {
        let jobs = db
            .query(
                &format!(
                    "SELECT id, lease_owner, lease_until_ms, not_before_ms, attempts FROM {}.push_jobs",
                    schema.name()
                ),
                &[],
            )
            .await
            .unwrap();
        let jobs: Vec<String> = jobs
            .iter()
            .map(|r| {
                let (id, owner, until, not_before, attempts): (i64, Option<String>, Option<i64>, i64, i64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                format!("#{id} lease {owner:?} until {until:?} not before {not_before} attempts {attempts}")
            })
            .collect();
        let logs: Vec<String> = dirs
            .iter()
            .map(|d| std::fs::read_to_string(d.path().join("relay.log")).unwrap_or_default())
            .collect();
        panic!(
            "timed out: {} pushes missing; now {}; outbox {jobs:?}; logs:\n{}",
            missing(&deliveries(&all, &devices)),
            now_ms(),
            logs.join("\n=====\n")
        );
    }
    // ...and the outbox drains, so nothing more will be sent.
    wait_until("the outbox drains", STEP, async || {
        let row = db
            .query_one(&format!("SELECT count(*) FROM {}.push_jobs", schema.name()), &[])
            .await
            .unwrap();
        row.get::<_, i64>(0) == 0
    })
    .await;

    let survivors: Vec<&Providers> = (0..NODES)
        .filter(|&i| i != VICTIM)
        .map(|i| &providers[i])
        .collect();
    let by_survivors = deliveries(&survivors, &devices);
    let by_victim = deliveries(&[&providers[VICTIM]], &devices);
    for (push, n) in by_survivors.iter().chain(&by_victim) {
        assert!(
            expected.contains(push),
            "a push of a message nobody stored for that device"
        );
        assert_eq!(*n, 1, "pushed {n} times by the same side (survivors or victim)");
    }
    // A push arriving from both sides is the at-least-once window of the notifier docs: the
    // victim's provider accepted it, and the victim died before committing the outcome,
    // so the job was still leased to it and a survivor sent it again. Such a job was among
    // the victim's orphaned jobs of that device, which bounds how many there can be.
    let mut twice: HashMap<&str, i64> = HashMap::new();
    for push in by_victim.keys().filter(|p| by_survivors.contains_key(p)) {
        *twice.entry(push.0.as_str()).or_default() += 1;
    }
    for (_, device) in &devices {
        let n = twice.get(device.token.as_str()).copied().unwrap_or(0);
        let held = orphans.get(&device.device_id[..]).copied().unwrap_or(0);
        assert!(
            n <= held,
            "{n} pushes to one device sent by the victim and again by a survivor, but the victim held only {held} of its jobs"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "multi_process_push: the victim held {} jobs at the kill; {} pushes sent by it and again by a survivor",
        orphans.values().sum::<i64>(),
        twice.values().sum::<i64>()
    );
    drop(channels);
    drop(nodes);
    drop(schema);
}
