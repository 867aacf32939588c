//! Fault tests (issue 7, part 5): what the relay does when the world around it breaks.
//! Each is bounded in time by [`within`] / [`PUSH_WAIT`] and asserts outcomes, never
//! durations.
//!
//! Already covered elsewhere and not repeated here: a provider hanging for one batch
//! (fast_mode.rs `a_hanging_provider_does_not_hold_up_other_devices`), a short 503 burst on
//! one message (fast_mode.rs `a_503_storm_is_retried_and_delivered_exactly_once`) and a
//! stale `ts` per RPC (mailbox.rs, fast_mode.rs `*_outside_the_window`).

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tidings_mock_push::{ApnsFailure, FcmFailure};
use tidings_proto::v1::PushNotification;
use tidings_relay::clock::{Clock, ManualClock};
use tidings_tests::{
    Account, STEP, TestRelay, now_s,
    push::{Device, PUSH_WAIT, PushRig, subscribe_request, unsubscribe_request},
    within,
};
use tonic::Code;

fn enc_of_apns(req: &tidings_mock_push::ApnsRequest) -> &str {
    req.body["enc"].as_str().expect("an APNs push carries enc")
}

fn enc_of_fcm(req: &tidings_mock_push::FcmRequest) -> &str {
    req.data.get("enc").expect("an FCM push carries data.enc")
}

/// Hashes of `notes`, sorted.
fn sorted_hashes<'a>(notes: impl IntoIterator<Item = &'a PushNotification>) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = notes.into_iter().map(|n| n.hash.clone()).collect();
    v.sort();
    v
}

// ============================================================== provider hangs and storms

/// Apple stops answering altogether: every APNs request must time out (so the same push is
/// tried again, proving the timeout fired), FCM pushes and the mailbox carry on, and once
/// Apple answers again every message reaches the phone exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_provider_times_out_and_everything_else_flows() {
    tidings_tests::require_backend!();
    let rig = PushRig::builder()
        .configure(|c| {
            c.push.timeout_ms = 300;
            c.push.concurrency = 8;
        })
        .start()
        .await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(false).await;
    // Longer than the test: a hung request is never answered while we look.
    rig.apns.set_delay(Some(Duration::from_secs(600)));

    const N: usize = 5;
    let mut sent = Vec::new();
    for i in 0..N {
        sent.push(rig.deposit(&alice, 0, format!("hung {i}").as_bytes()).await.hash);
    }
    sent.sort();
    let fcm = rig.fcm.wait_for(N, PUSH_WAIT).await.expect("FCM pushes flow");
    let notes: Vec<PushNotification> = fcm.iter().map(|r| droid.decrypt(enc_of_fcm(r))).collect();
    assert_eq!(sorted_hashes(&notes), sent);

    // More APNs requests than messages while nothing was ever answered: a request timed
    // out and its push was tried again.
    within(PUSH_WAIT, "APNs is retried after timeouts", async {
        while rig.apns.requests() <= N as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(rig.apns.delivered().is_empty());

    // The mailbox is not held up by the notifier: Store and Retrieve answer.
    let mut mailbox = rig.relay().mailbox.clone();
    within(
        STEP,
        "store during the hang",
        mailbox.store(alice.store(11, b"still here", 0)),
    )
    .await
    .expect("Store answers while a provider hangs");
    let page = within(
        STEP,
        "retrieve during the hang",
        mailbox.retrieve(alice.retrieve(0, 0, 0, 0)),
    )
    .await
    .expect("Retrieve answers while a provider hangs")
    .into_inner();
    assert_eq!(page.messages.len(), N);

    rig.apns.set_delay(None);
    let got = rig.apns.wait_for(N, PUSH_WAIT).await.expect("APNs recovers");
    rig.settle().await;
    let notes: Vec<PushNotification> = got.iter().map(|r| phone.decrypt(enc_of_apns(r))).collect();
    assert_eq!(sorted_hashes(&notes), sent, "each message once");
    assert_eq!(rig.apns.delivered().len(), N);
    assert_eq!(rig.fcm.delivered().len(), N);
}

/// Both providers answer 503 to many pushes in a row: the relay backs off (never retries a
/// push sooner than the minimum backoff), recovers when they do, delivers every message,
/// and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_503_storm_backs_off_recovers_and_loses_nothing() {
    tidings_tests::require_backend!();
    let rig = PushRig::builder()
        .configure(|c| {
            c.push.concurrency = 8;
            // The breaker (tested on its own in the notifier) would hold the pushes back
            // for its cooldown and let one probe through at a time; this test is about
            // each push's own backoff and recovery.
            c.push.breaker_failures = 1_000_000;
        })
        .start()
        .await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(false).await;

    const N: usize = 30;
    // Every first attempt fails, and about half of the second ones.
    rig.apns.fail_next(N + N / 2, ApnsFailure::unavailable());
    rig.fcm.fail_next(N + N / 2, FcmFailure::unavailable());
    let mut sent = Vec::new();
    for i in 0..N {
        sent.push(rig.deposit(&alice, 0, format!("storm {i}").as_bytes()).await.hash);
    }
    sent.sort();
    let apns = rig.apns.wait_for(N, PUSH_WAIT).await.expect("APNs recovers");
    let fcm = rig.fcm.wait_for(N, PUSH_WAIT).await.expect("FCM recovers");
    rig.settle().await;

    let apns_notes: Vec<PushNotification> = apns.iter().map(|r| phone.decrypt(enc_of_apns(r))).collect();
    let fcm_notes: Vec<PushNotification> = fcm.iter().map(|r| droid.decrypt(enc_of_fcm(r))).collect();
    assert_eq!(sorted_hashes(&apns_notes), sent, "APNs: every message, once");
    assert_eq!(sorted_hashes(&fcm_notes), sent, "FCM: every message, once");
    assert_eq!(rig.apns.delivered().len(), N);
    assert_eq!(rig.fcm.delivered().len(), N);

    // Backoff: attempts of one push are at least the minimum backoff (1 s, minus a little
    // for the distance between the relay's and the mock's clocks) apart.
    let mut apns_times: HashMap<Vec<u8>, Vec<SystemTime>> = HashMap::new();
    let attempts = rig.apns.attempts();
    assert_eq!(attempts.iter().filter(|a| a.status == 503).count(), N + N / 2);
    for a in &attempts {
        let hash = phone.decrypt(enc_of_apns(a)).hash;
        apns_times.entry(hash).or_default().push(a.at);
    }
    let mut fcm_times: HashMap<Vec<u8>, Vec<SystemTime>> = HashMap::new();
    for a in rig.fcm.attempts() {
        let hash = droid.decrypt(enc_of_fcm(&a)).hash;
        fcm_times.entry(hash).or_default().push(a.at);
    }
    for times in apns_times.values_mut().chain(fcm_times.values_mut()) {
        assert!(times.len() >= 2, "every push failed at least once");
        times.sort();
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
            assert!(gap >= Duration::from_millis(900), "retried after only {gap:?}");
        }
    }
    assert!(
        rig.subscription(&alice, &phone.device_id).await.is_some(),
        "token kept"
    );
    assert!(
        rig.subscription(&alice, &droid.device_id).await.is_some(),
        "token kept"
    );
}

// ============================================================================ storage full

/// A tmpfs of `size` mounted on `dir` for the life of the value; `None` (after a visible
/// SKIPPED line) when this process may not mount.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                println!(
                    "SKIPPED: storage-full test needs to mount a tmpfs (run as root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: storage-full test needs `mount`: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the file system holding `path` until it reports full.
fn fill_up(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let block = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Whatever is left is less than a block; take that too.
    for _ in 0..64 {
        if f.write_all(&[0xa5; 1024]).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

/// The data disk fills up: Store answers UNAVAILABLE (never anything else, never a
/// half-written message), everything acknowledged before stays readable, and when space
/// returns the relay takes Stores again, with no restart; after a restart on the same
/// files every acknowledged message is still there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_unavailable_and_recovers_when_space_returns() {
    tidings_tests::require_backend!();
    if tidings_tests::postgres_requested() {
        println!(
            "SKIPPED: storage-full test applies to the embedded store (PostgreSQL manages its own disk)"
        );
        return;
    }
    let Some(fs) = Tmpfs::mount("24m") else {
        return;
    };
    let data_dir = fs.path().join("data");
    // Rate limits would refuse the burst of Stores below before the disk does.
    let relay = TestRelay::builder()
        .data_dir(&data_dir)
        .configure(|c| c.rate_limits.enabled = false)
        .start()
        .await;
    let alice = Account::random();
    let mut mailbox = relay.mailbox.clone();
    let mut acked: Vec<Vec<u8>> = Vec::new();
    for i in 0..5 {
        let r = within(
            STEP,
            "store before",
            mailbox.store(alice.store(10, format!("before {i}").as_bytes(), 0)),
        )
        .await
        .expect("stored")
        .into_inner();
        acked.push(r.hash);
    }

    let filler = fs.path().join("filler");
    fill_up(&filler);
    // Stores until the disk says no; what was acknowledged on the way must survive.
    let mut refused = None;
    for i in 0..2_000 {
        let data = format!("while full {i} {}", "x".repeat(8_000));
        match within(
            STEP,
            "store while full",
            mailbox.store(alice.store(10, data.as_bytes(), 0)),
        )
        .await
        {
            Ok(r) => acked.push(r.into_inner().hash),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("a full disk refuses Stores");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Still full: still refused the same way, and reads still work.
    let again = within(
        STEP,
        "store while full",
        mailbox.store(alice.store(10, b"again", 0)),
    )
    .await;
    assert_eq!(again.expect_err("still full").code(), Code::Unavailable);

    // Space returns: the relay takes Stores again without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let recovered = within(STEP, "store after space returns", async {
        loop {
            match mailbox.store(alice.store(10, b"after", 0)).await {
                Ok(r) => return r.into_inner(),
                Err(s) => {
                    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await;
    acked.push(recovered.hash);
    let check = |messages: Vec<tidings_proto::v1::StoredMessage>, when: &str| {
        let mut got: Vec<Vec<u8>> = messages.into_iter().map(|m| m.hash).collect();
        got.sort();
        let mut want = acked.clone();
        want.sort();
        assert_eq!(got, want, "{when}: exactly the acknowledged messages");
    };
    check(relay.retrieve_all(&alice, 10).await, "after recovery");

    // Nothing on disk is corrupt: a new relay on the same files serves the same messages.
    let storage = relay.storage();
    relay.shutdown().await;
    let relay = TestRelay::builder()
        .data_dir(&data_dir)
        .storage(storage)
        .start()
        .await;
    check(relay.retrieve_all(&alice, 10).await, "after a restart");
    relay.shutdown().await;
    drop(fs);
}

// ============================================================================= clock skew

/// The relay's clock is far off the clients': every signed request is refused with
/// UNAUTHENTICATED naming `ts`, nothing is written, unsigned public deposits still work,
/// and once the clock is right again the same kind of requests pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_refused_while_the_relay_clock_is_skewed() {
    tidings_tests::require_backend!();
    let clock = ManualClock::starting_now();
    let rig = PushRig::builder().clock(Arc::new(clock.clone())).start().await;
    let alice = Account::random();
    let phone = Device::apns();

    // Ten seconds past the edge: the relay's clock stands still while the clients' `ts`
    // follows the real one, so a skew of just over 300 s would slide back into the window
    // (one CI run saw `ts` tick over between setting the clock and signing).
    for skew_ms in [310_000i64, -310_000, 3_600_000] {
        clock.set_ms(now_s() * 1000 + skew_ms);
        let mut mailbox = rig.relay().mailbox.clone();
        let refused = |r: Result<_, tonic::Status>, what: &str| {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{what} accepted with the clock {skew_ms} ms off"));
            assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
            assert!(e.message().starts_with("ts: "), "{what}: {}", e.message());
        };
        refused(
            mailbox.store(alice.store(10, b"skewed", 0)).await.map(drop),
            "Store",
        );
        refused(
            mailbox.retrieve(alice.retrieve(10, 0, 0, 0)).await.map(drop),
            "Retrieve",
        );
        refused(
            mailbox.delete(alice.delete(10, &[vec![1; 32]])).await.map(drop),
            "Delete",
        );
        let sub = subscribe_request(&alice, &rig.relay_pub(), &[0], false, &phone.registration());
        refused(rig.try_subscribe(sub).await.map(drop), "Subscribe");
        let unsub = unsubscribe_request(&alice, &phone.device_id, now_s());
        if skew_ms < 0 {
            refused(rig.try_unsubscribe(unsub).await.map(drop), "Unsubscribe");
        } else {
            // An Unsubscribe may be old (DESIGN.md "Unsubscribe may be sent late": a
            // sign-out queues it for whenever the relay answers), and removes nothing a
            // later Subscribe made; here there is nothing to remove.
            let answer = rig
                .try_unsubscribe(unsub)
                .await
                .expect("an old Unsubscribe is taken");
            assert!(!answer.removed, "nothing was subscribed");
        }
        // A public deposit carries no ts and is not affected.
        rig.deposit(&alice, 0, b"deposit").await;
    }
    assert_eq!(rig.relay().stored_count(&alice, 10).await, 0, "nothing stored");
    assert!(
        rig.subscription(&alice, &phone.device_id).await.is_none(),
        "nothing subscribed"
    );

    // Just inside the window is fine; then back in sync.
    for skew_ms in [299_000i64, 0] {
        clock.set_ms(now_s() * 1000 + skew_ms);
        let mut mailbox = rig.relay().mailbox.clone();
        mailbox
            .store(alice.store(10, format!("ok {skew_ms}").as_bytes(), 0))
            .await
            .expect("Store");
        rig.subscribe(&alice, &phone, &[0], false).await;
    }
    assert_eq!(rig.relay().stored_count(&alice, 10).await, 2);
    assert!(rig.subscription(&alice, &phone.device_id).await.is_some());
}

// ================================================================================= replay

/// Re-sending the exact bytes of a signed Store, Delete, Subscribe or Unsubscribe (as an
/// observer who captured them could, within the `ts` window) changes nothing: Store is
/// idempotent (same hash and seq, `duplicate`, no second push), Delete and Unsubscribe find
/// nothing left to remove, Subscribe renews the same row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_requests_are_harmless() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let alice = Account::random();
    let phone = Device::apns();
    let mut mailbox = rig.relay().mailbox.clone();

    // Subscribe, twice with the same bytes.
    let sub = subscribe_request(&alice, &rig.relay_pub(), &[10], false, &phone.registration());
    let first = rig.try_subscribe(sub.clone()).await.expect("subscribe");
    let stored = rig
        .subscription(&alice, &phone.device_id)
        .await
        .expect("subscribed");
    let replay = rig
        .try_subscribe(sub.clone())
        .await
        .expect("a replayed Subscribe is accepted");
    assert!(
        first.added && !replay.added,
        "the replay adds no second subscription"
    );
    let after = rig
        .subscription(&alice, &phone.device_id)
        .await
        .expect("still subscribed");
    assert_eq!(after.namespaces, stored.namespaces);
    assert_eq!(after.want_data, stored.want_data);

    // Store, twice with the same bytes: one message, one push.
    let store = alice.store(10, b"exactly once", 0);
    let a = mailbox.store(store.clone()).await.expect("store").into_inner();
    let b = mailbox
        .store(store.clone())
        .await
        .expect("replayed store")
        .into_inner();
    assert!(!a.duplicate && b.duplicate);
    assert_eq!((a.hash.clone(), a.seq), (b.hash.clone(), b.seq));
    rig.apns.wait_for(1, PUSH_WAIT).await.expect("pushed");
    rig.settle().await;
    assert_eq!(rig.apns.attempts().len(), 1, "the replay was not pushed again");
    assert_eq!(rig.relay().retrieve_all(&alice, 10).await.len(), 1);

    // Delete, twice with the same bytes: the second finds nothing.
    let delete = alice.delete(10, std::slice::from_ref(&a.hash));
    let d1 = mailbox.delete(delete.clone()).await.expect("delete").into_inner();
    let d2 = mailbox
        .delete(delete.clone())
        .await
        .expect("replayed delete")
        .into_inner();
    assert_eq!((d1.deleted, d2.deleted), (1, 0));
    assert_eq!(rig.relay().stored_count(&alice, 10).await, 0);

    // Unsubscribe, twice with the same bytes: the second removes nothing.
    let unsub = unsubscribe_request(&alice, &phone.device_id, now_s());
    let u1 = rig.try_unsubscribe(unsub.clone()).await.expect("unsubscribe");
    let u2 = rig.try_unsubscribe(unsub).await.expect("replayed unsubscribe");
    assert!(u1.removed && !u2.removed);
    assert!(rig.subscription(&alice, &phone.device_id).await.is_none());

    // The same requests replayed after the window are refused outright.
    let clock_ahead = ManualClock::new(tidings_relay::clock::SystemClock.now_ms() + 310_000);
    let late = PushRig::builder().clock(Arc::new(clock_ahead)).start().await;
    let mut late_mailbox = late.relay().mailbox.clone();
    let e = late_mailbox.store(store).await.expect_err("stale replay");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = late.try_subscribe(sub).await.expect_err("stale replay");
    assert_eq!(e.code(), Code::Unauthenticated);
}

// ====================================================================== idle connections

const IDLE_CONNECTIONS: usize = 10_000;
const HOLDER_ADDR_ENV: &str = "TIDINGS_IDLE_HOLDER_ADDR";
const HOLDER_COUNT_ENV: &str = "TIDINGS_IDLE_HOLDER_COUNT";

/// Resident memory of this process (the relay runs in it), from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Not a test on its own: the child process of `ten_thousand_idle_connections_stay_cheap`.
/// The client ends of the connections live in a separate process, so neither side's file
/// descriptors count against the other's limit (the hard limit here is 20 000). Opens
/// the connections, completes the HTTP/2 preface on each, prints `OPEN n`, then holds
/// them until its stdin closes.
#[test]
#[ignore = "helper process of ten_thousand_idle_connections_stay_cheap"]
fn idle_connection_holder() {
    let Ok(addr) = std::env::var(HOLDER_ADDR_ENV) else {
        return;
    };
    let addr: SocketAddr = addr.parse().expect("an address");
    let count: usize = std::env::var(HOLDER_COUNT_ENV)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(IDLE_CONNECTIONS);
    // Client preface and an empty SETTINGS frame: an HTTP/2 client that then says nothing.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
    // In waves well below the listen backlog, each wave answered before the next: a full
    // accept queue drops handshakes, and the kernel's SYN retries would take seconds.
    while conns.len() < count {
        let wave = (count - conns.len()).min(256);
        eprintln!("holder: {} of {count} open", conns.len());
        let start = conns.len();
        for _ in 0..wave {
            let mut c = TcpStream::connect_timeout(&addr, STEP).expect("connect");
            c.write_all(&hello).expect("send the preface");
            conns.push(c);
        }
        // The relay answers each with its SETTINGS frame: every connection is served.
        for c in &mut conns[start..] {
            c.set_read_timeout(Some(STEP)).expect("timeout");
            let mut header = [0u8; 9];
            c.read_exact(&mut header).expect("the relay's SETTINGS");
            assert_eq!(header[3], 4, "first frame is SETTINGS");
        }
    }
    println!("OPEN {}", conns.len());
    std::io::stdout().flush().expect("flush");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(conns);
}

/// 10 000 idle HTTP/2 connections: the relay accepts them all, keeps serving requests
/// meanwhile, its memory grows by less than 200 MB, and the sockets are released once the
/// clients go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_stay_cheap() {
    tidings_tests::require_backend!();
    let relay = TestRelay::builder()
        .configure(|c| c.limits.max_connections = 16_384)
        .start()
        .await;
    let alice = Account::random();
    let mut mailbox = relay.mailbox.clone();
    mailbox
        .store(alice.deposit(0, b"warm up", 0))
        .await
        .expect("store");
    let (rss_before, fds_before) = (rss_bytes(), open_fds());
    // A smaller count can be asked for when investigating.
    let idle: usize = std::env::var(HOLDER_COUNT_ENV)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(IDLE_CONNECTIONS);

    let mut holder = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "idle_connection_holder",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_ADDR_ENV, relay.addr.to_string())
        .env(HOLDER_COUNT_ENV, idle.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the connection holder");
    let stdout = holder.stdout.take().expect("piped stdout");
    let opened = within(
        Duration::from_secs(120),
        "the holder opens its connections",
        async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // Reads the holder's stdout to its end: libtest writes to it again on exit.
            tokio::task::spawn_blocking(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // libtest may have printed "test idle_connection_holder ... " before it.
                    if let Some((_, n)) = line.split_once("OPEN ")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(n.trim().parse::<usize>().ok());
                    }
                }
            });
            rx.await.ok().flatten()
        },
    )
    .await;
    assert_eq!(opened, Some(idle), "the holder opened every connection");

    // Still serving, on a fresh connection, with all of them open.
    let mut fresh = relay.connect().await;
    within(
        STEP,
        "store under load",
        fresh.store(alice.deposit(0, b"still serving", 0)),
    )
    .await
    .expect("Store with 10k idle connections open");
    let rss_with = rss_bytes();
    let growth = rss_with.saturating_sub(rss_before);
    println!(
        "idle connections: {idle}; relay RSS {} MB -> {} MB (+{} MB, {} bytes per connection); fds {fds_before} -> {}",
        rss_before >> 20,
        rss_with >> 20,
        growth >> 20,
        growth / idle as u64,
        open_fds()
    );
    assert!(open_fds() >= fds_before + idle, "the relay holds the server ends");
    assert!(
        growth < 200 << 20,
        "relay memory grew by {} MB for idle connections",
        growth >> 20
    );

    // The clients go away: the relay lets go of every socket.
    drop(holder.stdin.take());
    let status = within(
        STEP,
        "the holder exits",
        tokio::task::spawn_blocking(move || holder.wait()),
    )
    .await
    .expect("join")
    .expect("wait");
    assert!(status.success(), "holder failed: {status:?}");
    within(
        Duration::from_secs(60),
        "the relay closes the idle connections",
        async {
            while open_fds() > fds_before + 100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    relay.shutdown().await;
}
