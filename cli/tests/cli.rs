//! The `tidings` binary end to end against a real relay (tidings-tests' `TestRelay`, in
//! this process): accounts, sealed messages, restore by phrase, linking by QR payload,
//! config converging between two state dirs, bad input (a distinct exit code, a clear
//! message, nothing written), every call through an independent OHTTP relay process
//! (`--ohttp-relay`), and a Web Push subscription pushed to by the mock Web Push service.
//! The phrase goes in on stdin, as a script's would. Every wait is bounded; nothing is
//! timed.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tidings_tests::{TestRelay, ohttp::OhttpRelay, require_backend, within};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");
/// The longest any one command may take.
const LIMIT: Duration = Duration::from_secs(60);
/// A valid phrase (the BIP-39 test vector) that no test creates on a relay.
const ABANDON: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

/// What one run printed and how it ended.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Every stdout line as JSON.
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{self:?}")))
            .collect()
    }

    /// The one JSON result.
    fn json(&self) -> Value {
        let mut lines = self.lines();
        assert_eq!(lines.len(), 1, "{self:?}");
        lines.remove(0)
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

/// `tidings --json --relay RELAY --state-dir DIR`, with no TIDINGS_* from the environment.
fn tidings(relay: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--json")
        .arg("--relay")
        .arg(relay)
        .arg("--state-dir")
        .arg(dir)
        .env_remove("TIDINGS_RELAY")
        .env_remove("TIDINGS_STATE_DIR")
        .env_remove("TIDINGS_KEY_FILE")
        .env_remove("TIDINGS_OHTTP_RELAY")
        .env_remove("TIDINGS_OHTTP_KEYS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs one command to its end, `stdin` written to it (then closed).
async fn run(relay: &str, dir: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = tidings(relay, dir).args(args).spawn().expect("the binary starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("stdin takes the input");
    drop(input);
    let out = within(LIMIT, &format!("tidings {args:?}"), child.wait_with_output())
        .await
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A command that keeps running; its stdout read line by line.
struct Running {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Running {
    fn start(relay: &str, dir: &Path, args: &[&str]) -> Running {
        let mut child = tidings(relay, dir).args(args).spawn().expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        Running {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn next(&mut self, what: &str) -> Value {
        let line = within(LIMIT, what, self.lines.next_line())
            .await
            .expect("stdout reads")
            .unwrap_or_else(|| panic!("the command ended before {what}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    async fn exit_code(mut self) -> i32 {
        let status = within(LIMIT, "the command ends", self.child.wait())
            .await
            .expect("the binary runs");
        status.code().unwrap_or(-1)
    }
}

/// Every file under `dir` and its bytes; `None` when `dir` does not exist.
fn snapshot(dir: &Path) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("readable") {
            let path = entry.expect("readable").path();
            if path.is_dir() {
                into.insert(path.clone(), Vec::new());
                walk(&path, into);
            } else {
                into.insert(path.clone(), fs::read(&path).expect("readable"));
            }
        }
    }
    if !dir.exists() {
        return None;
    }
    let mut files = BTreeMap::new();
    walk(dir, &mut files);
    Some(files)
}

/// Creates an account in `dir`: its id and phrase.
async fn create(relay: &str, dir: &Path) -> (String, String) {
    let created = run(relay, dir, &["account", "create"], "").await.ok().json();
    let id = created["account_id"].as_str().expect("an account id").to_owned();
    let phrase = created["phrase"].as_str().expect("a phrase").to_owned();
    assert_eq!(phrase.split(' ').count(), 12);
    (id, phrase)
}

/// An address nothing listens on.
fn closed_relay() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("an address");
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_message_each_other_and_restore_by_phrase() {
    require_backend!();
    let relay = TestRelay::start().await;
    let url = relay.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (alice_dir, bob_dir, laptop_dir) = (
        tmp.path().join("alice"),
        tmp.path().join("bob"),
        tmp.path().join("bob-laptop"),
    );

    let (alice, _) = create(&url, &alice_dir).await;
    let (bob, bob_phrase) = create(&url, &bob_dir).await;
    assert_ne!(alice, bob);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(alice_dir.join("key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the state key is its owner's alone");
    }
    let shown = run(&url, &alice_dir, &["account", "show"], "").await.ok().json();
    assert_eq!(shown["account_id"], alice.as_str());
    assert!(shown.get("phrase").is_none());

    run(&url, &bob_dir, &["contacts", "add", &alice, "Alice"], "")
        .await
        .ok();
    let sent = run(&url, &alice_dir, &["send", &bob, "hello bob"], "")
        .await
        .ok()
        .json();
    assert_eq!(sent["sealed"], true);

    let heard = run(&url, &bob_dir, &["listen", "--once"], "").await.ok().lines();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0]["kind"], "sealed");
    assert_eq!(heard[0]["sender"], alice.as_str());
    assert_eq!(heard[0]["contact"], "Alice");
    assert_eq!(heard[0]["text"], "hello bob");
    let again = run(&url, &bob_dir, &["listen", "--once"], "").await.ok();
    assert!(
        again.lines().is_empty(),
        "acknowledged messages are not offered again: {again:?}"
    );

    // Bob's second device, by phrase on stdin: same account, and the contact came along.
    let restored = run(
        &url,
        &laptop_dir,
        &["account", "restore"],
        &format!("{bob_phrase}\n"),
    )
    .await
    .ok()
    .json();
    assert_eq!(restored["account_id"], bob.as_str());
    let contacts = run(&url, &laptop_dir, &["contacts", "list"], "")
        .await
        .ok()
        .json();
    assert_eq!(contacts["contacts"][0]["account_id"], alice.as_str());
    assert_eq!(contacts["contacts"][0]["name"], "Alice");

    // Bob answers from the laptop; Alice hears him as the sender, with no contact name.
    run(&url, &laptop_dir, &["send", &alice, "hi alice"], "")
        .await
        .ok();
    run(&url, &laptop_dir, &["send", &alice, "opaque bytes", "--raw"], "")
        .await
        .ok();
    let heard = run(&url, &alice_dir, &["listen", "--once"], "")
        .await
        .ok()
        .lines();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert_eq!(heard[0]["sender"], bob.as_str());
    assert_eq!(heard[0]["contact"], Value::Null);
    assert_eq!(heard[0]["text"], "hi alice");
    assert_eq!(heard[1]["kind"], "raw");
    assert_eq!(heard[1]["text"], "opaque bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_links_by_qr_payload_and_config_converges() {
    require_backend!();
    let relay = TestRelay::start().await;
    let url = relay.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (phone, laptop) = (tmp.path().join("phone"), tmp.path().join("laptop"));
    let (alice, _) = create(&url, &phone).await;

    let mut show = Running::start(
        &url,
        &laptop,
        &[
            "link",
            "show",
            "--yes",
            "--timeout",
            "60",
            "--name",
            "Test laptop",
        ],
    );
    let offer = show.next("the link offer").await;
    assert_eq!(offer["event"], "offer");
    let payload = offer["payload"].as_str().expect("a payload").to_owned();
    assert!(payload.starts_with("tidings-link:v2:"), "{payload}");

    let scanned = run(&url, &phone, &["link", "scan", &payload, "--yes"], "")
        .await
        .ok()
        .lines();
    assert_eq!(scanned[0]["event"], "request");
    assert_eq!(scanned[0]["device_name"], "Test laptop");
    assert_eq!(scanned[0]["same_relay"], true);
    assert_eq!(scanned[1]["event"], "approved");
    let code = show.next("the code").await;
    assert_eq!(code["event"], "code");
    assert_eq!(code["code"], scanned[0]["code"], "both devices show one code");
    let linked = show.next("the link's end").await;
    assert_eq!(linked["event"], "linked");
    assert_eq!(linked["account_id"], alice.as_str());
    assert_eq!(show.exit_code().await, 0);
    let shown = run(&url, &laptop, &["account", "show"], "").await.ok().json();
    assert_eq!(shown["account_id"], alice.as_str());

    // A contact added on the phone shows on the laptop: to a watcher, and after one sync.
    let (carol, _) = create(&url, &tmp.path().join("carol")).await;
    let mut watch = Running::start(&url, &laptop, &["contacts", "list", "--watch"]);
    let first = watch.next("the first listing").await;
    assert_eq!(first["contacts"], serde_json::json!([]));
    run(&url, &phone, &["contacts", "add", &carol, "Carol"], "")
        .await
        .ok();
    let changed = watch.next("the listing after the change").await;
    assert_eq!(changed["contacts"][0]["name"], "Carol");
    drop(watch);
    let listed = run(&url, &laptop, &["contacts", "list"], "").await.ok().json();
    assert_eq!(listed["contacts"][0]["account_id"], carol.as_str());

    // And the other way round, for the profile and the settings.
    run(&url, &laptop, &["profile", "set-name", "Alice L."], "")
        .await
        .ok();
    run(&url, &laptop, &["settings", "previews", "--content", "on"], "")
        .await
        .ok();
    run(&url, &laptop, &["contacts", "block", &carol], "").await.ok();
    let profile = run(&url, &phone, &["profile"], "").await.ok().json();
    assert_eq!(profile["display_name"], "Alice L.");
    let settings = run(&url, &phone, &["settings"], "").await.ok().json();
    assert_eq!(settings["previews"]["content"], true);
    let contacts = run(&url, &phone, &["contacts"], "").await.ok().json();
    assert_eq!(contacts["contacts"][0]["blocked"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_link_ends_both_sides_with_exit_7_and_links_nothing() {
    require_backend!();
    let relay = TestRelay::start().await;
    let url = relay.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (phone, laptop) = (tmp.path().join("phone"), tmp.path().join("laptop"));
    create(&url, &phone).await;

    let mut show = Running::start(&url, &laptop, &["link", "show", "--yes", "--timeout", "60"]);
    let payload = show.next("the link offer").await["payload"]
        .as_str()
        .expect("a payload")
        .to_owned();
    let declined = run(&url, &phone, &["link", "scan", &payload, "--decline"], "").await;
    assert_eq!(declined.code, 7, "{declined:?}");
    assert_eq!(show.exit_code().await, 7);
    assert_eq!(snapshot(&laptop), None, "nothing was written on the new device");

    let damaged = run(&url, &phone, &["link", "scan", "tidings-link:v2:AAAA"], "").await;
    assert_eq!(damaged.code, 3, "{damaged:?}");
    assert!(damaged.stderr.contains("link code"), "{damaged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_own_exit_code_a_clear_message_and_writes_nothing() {
    require_backend!();
    let relay = TestRelay::start().await;
    let url = relay.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");

    // A wrong phrase word: named by its position, never the word (nor a suggestion).
    let typo = ABANDON
        .replacen("abandon", "abandom", 5)
        .replacen("abandom", "abandon", 4);
    assert_eq!(typo.split(' ').nth(4), Some("abandom"));
    let wrong = run(&url, &fresh, &["account", "restore"], &format!("{typo}\n")).await;
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(wrong.stderr.contains("word 5"), "{wrong:?}");
    assert!(
        !wrong.stderr.contains("abandom") && !wrong.stderr.contains("abandon"),
        "{wrong:?}"
    );
    assert!(wrong.stdout.is_empty(), "{wrong:?}");
    let swapped = run(
        &url,
        &fresh,
        &["account", "restore"],
        &format!("{}\n", "abandon ".repeat(12)),
    )
    .await;
    assert_eq!(swapped.code, 3, "{swapped:?}");
    assert!(!swapped.stderr.contains("abandon"), "{swapped:?}");
    assert_eq!(snapshot(&fresh), None);

    // An unreachable relay at restore.
    let down = closed_relay();
    let unreachable = run(&down, &fresh, &["account", "restore"], &format!("{ABANDON}\n")).await;
    assert_eq!(unreachable.code, 4, "{unreachable:?}");
    assert!(
        unreachable.stderr.contains("cannot reach the relay"),
        "{unreachable:?}"
    );
    assert_eq!(snapshot(&fresh), None);
    let offline_link = run(&down, &fresh, &["link", "show", "--yes"], "").await;
    assert_eq!(offline_link.code, 4, "{offline_link:?}");
    assert_eq!(snapshot(&fresh), None);

    // No account yet.
    let none = run(&url, &fresh, &["contacts", "list"], "").await;
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("tidings account create"), "{none:?}");
    assert_eq!(snapshot(&fresh), None);

    // Unknown and malformed account ids.
    let alice_dir = tmp.path().join("alice");
    create(&url, &alice_dir).await;
    let before = snapshot(&alice_dir);
    let malformed = run(&url, &alice_dir, &["send", "01zz", "hi"], "").await;
    assert_eq!(malformed.code, 3, "{malformed:?}");
    assert!(malformed.stderr.contains("not an account id"), "{malformed:?}");
    // "01" and the encoding of the identity point: 32 bytes, but no account's key.
    let no_key = format!("0101{}", "00".repeat(31));
    let unknown = run(&url, &alice_dir, &["send", &no_key, "hi"], "").await;
    assert_eq!(unknown.code, 3, "{unknown:?}");
    assert!(unknown.stderr.contains("names no account"), "{unknown:?}");
    assert!(!unknown.stderr.contains(&no_key), "{unknown:?}");
    let add = run(&url, &alice_dir, &["contacts", "add", "01abc", "Nobody"], "").await;
    assert_eq!(add.code, 3, "{add:?}");
    let (bob, _) = create(&url, &tmp.path().join("bob")).await;
    let cut_off = run(&down, &alice_dir, &["send", &bob, "hi"], "").await;
    assert_eq!(cut_off.code, 4, "{cut_off:?}");
    assert_eq!(snapshot(&alice_dir), before, "nothing was written");
    let stranger = run(&url, &alice_dir, &["contacts", "remove", &bob], "").await;
    assert_eq!(stranger.code, 3, "{stranger:?}");
    assert!(stranger.stderr.contains("no contact"), "{stranger:?}");

    // A corrupted state dir.
    fs::write(
        alice_dir.join("identity.sealed"),
        b"TDS1 not what was sealed here",
    )
    .unwrap();
    let before = snapshot(&alice_dir);
    for args in [
        &["account", "show"][..],
        &["contacts", "list"],
        &["listen", "--once"],
        &["send", &bob, "hi"],
    ] {
        let broken = run(&url, &alice_dir, args, "").await;
        assert_eq!(broken.code, 6, "{args:?}: {broken:?}");
        assert!(broken.stderr.contains("cannot use the state"), "{broken:?}");
        assert_eq!(broken.stderr.lines().count(), 1, "one line: {broken:?}");
    }
    assert_eq!(snapshot(&alice_dir), before, "nothing was written");
    // A damaged key file.
    let carol_dir = tmp.path().join("carol");
    create(&url, &carol_dir).await;
    fs::write(carol_dir.join("key"), "not a key\n").unwrap();
    let before = snapshot(&carol_dir);
    let bad_key = run(&url, &carol_dir, &["account", "show"], "").await;
    assert_eq!(bad_key.code, 6, "{bad_key:?}");
    assert!(bad_key.stderr.contains("key file"), "{bad_key:?}");
    assert_eq!(snapshot(&carol_dir), before);

    // Usage errors are clap's 2.
    let usage = run(&url, &carol_dir, &["send"], "").await;
    assert_eq!(usage.code, 2, "{usage:?}");
}

// ---- Oblivious HTTP (--ohttp-relay) ---------------------------------------------------

/// Set in the environment of this test binary when it runs as the OHTTP relay.
const OHTTP_RELAY_CHILD: &str = "TIDINGS_CLI_TEST_OHTTP_RELAY";

/// Not a test of its own: the OHTTP tests run this binary again, through a script
/// ([`ohttp_relay_script`]), as their independent OHTTP relay: the published `ohttp-relay`
/// crate, run as its own binary runs it (tests/src/bin/ohttp-relay.rs), in its own process.
/// Configured by `PORT` and `GATEWAY_ORIGIN`, as tidings-tests' `OhttpRelay` sets them.
#[test]
#[ignore = "the OHTTP relay process of the OHTTP tests"]
fn ohttp_relay_process() {
    if std::env::var_os(OHTTP_RELAY_CHILD).is_none() {
        return;
    }
    // The relay's HTTPS client needs a process-wide provider; ring is the one linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let gateway: ohttp_relay::GatewayUri = std::env::var("GATEWAY_ORIGIN").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let served = ohttp_relay::listen_tcp(port, gateway).await.expect("it listens");
        let _ = served.await;
    });
}

/// A script that starts this test binary as [`ohttp_relay_process`], for tidings-tests'
/// `OhttpRelay::start` (which runs a binary with no arguments).
fn ohttp_relay_script(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let script = dir.join("ohttp-relay.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n{OHTTP_RELAY_CHILD}=1 exec '{}' ohttp_relay_process --exact --ignored --nocapture \
             --test-threads=1\n",
            exe.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    script
}

/// The gateway on, on a free port, with the OHTTP relay's address (127.0.0.1) listed.
fn with_gateway(c: &mut tidings_tests::tidings_relay::config::Config) {
    c.ohttp.enabled = true;
    c.ohttp.listen = "127.0.0.1:0".parse().unwrap();
    c.ohttp.relays = vec!["127.0.0.1".into()];
}

/// The relay's count of gateway requests with `outcome` (`keys`: key configurations
/// served, each a direct request; `answered`: calls carried through the OHTTP relay).
async fn ohttp_requests(relay: &TestRelay, outcome: &str) -> u64 {
    let (status, metrics) = within(
        LIMIT,
        "scrape",
        tidings_tests::http_get(relay.admin_addr(), "/metrics"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let series = format!("tidings_ohttp_requests_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

/// The key configuration pinned in a state dir.
fn pinned(dir: &Path) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = fs::read(dir.join("ohttp-keys.json")).ok()?;
    let json: Value = serde_json::from_slice(&text).unwrap();
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(json["key_config"].as_str().unwrap())
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_message_each_other_through_an_ohttp_relay() {
    require_backend!();
    let relay = TestRelay::builder().configure(with_gateway).start().await;
    let gateway_addr = relay.relay().ohttp_addr().expect("the gateway is on");
    let tmp = tempfile::tempdir().unwrap();
    let ohttp_relay = OhttpRelay::start(&ohttp_relay_script(tmp.path()), gateway_addr).await;
    let gateway = format!("http://{gateway_addr}");
    let via = ohttp_relay.url();
    let through = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = ["--ohttp-relay", via.as_str()].map(str::to_owned).to_vec();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    };
    let run_through = async |dir: &Path, args: &[&str], stdin: &str| {
        let args = through(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&gateway, dir, &args, stdin).await
    };
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = run_through(&alice_dir, &["account", "create"], "")
        .await
        .ok()
        .json();
    let alice = alice["account_id"].as_str().unwrap().to_owned();
    let bob = run_through(&bob_dir, &["account", "create"], "")
        .await
        .ok()
        .json();
    let bob = bob["account_id"].as_str().unwrap().to_owned();
    assert_eq!(pinned(&alice_dir), None, "creating an account touches no network");
    assert_eq!(ohttp_requests(&relay, "keys").await, 0);

    // Alice's first call fetches the gateway's keys (directly, once) and pins them.
    run_through(&bob_dir, &["contacts", "add", &alice, "Alice"], "")
        .await
        .ok();
    let sent = run_through(&alice_dir, &["send", &bob, "hello through ohttp"], "")
        .await
        .ok()
        .json();
    assert_eq!(sent["sealed"], true);
    let keys = tidings_tests::ohttp::fetch_key_config(gateway_addr).await;
    assert_eq!(pinned(&alice_dir), Some(keys.clone()));
    assert_eq!(pinned(&bob_dir), Some(keys.clone()));
    let fetched = ohttp_requests(&relay, "keys").await;
    assert_eq!(fetched, 3, "one fetch for each state dir and one by this test");

    // Bob reads it (a sync and a retrieve, signed), and answers; nothing is fetched again.
    let heard = run_through(&bob_dir, &["listen", "--once"], "")
        .await
        .ok()
        .lines();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0]["sender"], alice.as_str());
    assert_eq!(heard[0]["contact"], "Alice");
    assert_eq!(heard[0]["text"], "hello through ohttp");
    run_through(&bob_dir, &["send", &alice, "hi alice"], "")
        .await
        .ok();
    let heard = run_through(&alice_dir, &["listen", "--once"], "")
        .await
        .ok()
        .lines();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0]["text"], "hi alice");
    assert_eq!(
        ohttp_requests(&relay, "keys").await,
        fetched,
        "the pinned keys were reused"
    );
    assert!(
        ohttp_requests(&relay, "answered").await >= 6,
        "every call went through the gateway"
    );

    // A key configuration given with --ohttp-keys: nothing is fetched at all.
    let carol_dir = tmp.path().join("carol");
    let keys_file = tmp.path().join("ohttp-keys.bin");
    fs::write(&keys_file, &keys).unwrap();
    let keys_arg = keys_file.to_str().unwrap();
    run_through(&carol_dir, &["account", "create"], "").await.ok();
    run_through(
        &carol_dir,
        &["--ohttp-keys", keys_arg, "send", &bob, "from carol"],
        "",
    )
    .await
    .ok();
    assert_eq!(ohttp_requests(&relay, "keys").await, fetched);
    assert_eq!(pinned(&carol_dir), Some(keys.clone()));

    // A pinned key the gateway does not accept: a clear refusal (5), the pin is forgotten,
    // and the next command fetches the current one.
    let mut stale = keys.clone();
    stale[2] = stale[2].wrapping_add(1); // the key id, after the list's length prefix
    let pin = json_pin(&gateway, &stale);
    fs::write(alice_dir.join("ohttp-keys.json"), pin).unwrap();
    let refused = run_through(&alice_dir, &["send", &bob, "stale"], "").await;
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("no longer accepts the key configuration"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("run the command again"), "{refused:?}");
    assert_eq!(pinned(&alice_dir), None, "the stale pin is forgotten");
    run_through(&alice_dir, &["send", &bob, "fresh"], "").await.ok();
    assert_eq!(pinned(&alice_dir), Some(keys.clone()));

    // Wrong addresses, each with its own message. The gRPC address instead of the gateway,
    // and a relay without OHTTP: no key configuration there.
    let plain = TestRelay::start().await;
    for not_a_gateway in [relay.endpoint(), plain.endpoint()] {
        let args = through(&["send", &alice, "hi"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let wrong = run(&not_a_gateway, &bob_dir, &args, "").await;
        // Nothing there speaks HTTP/1.1 (the gRPC listener is HTTP/2 only): unreachable.
        assert_eq!(wrong.code, 4, "{wrong:?}");
        assert!(
            wrong.stderr.contains("cannot fetch the OHTTP key configuration"),
            "{wrong:?}"
        );
        assert!(wrong.stderr.contains("[ohttp] enabled = true"), "{wrong:?}");
        assert!(wrong.stderr.contains("not the gRPC address"), "{wrong:?}");
        assert_eq!(wrong.stderr.lines().count(), 1, "{wrong:?}");
    }
    // Something that speaks HTTP but is no gateway (the relay's admin listener): refused.
    let args = through(&["send", &alice, "hi"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let admin = format!("http://{}", relay.admin_addr());
    let no_gateway = run(&admin, &bob_dir, &args, "").await;
    assert_eq!(no_gateway.code, 5, "{no_gateway:?}");
    assert!(
        no_gateway.stderr.contains("serves no OHTTP key configuration"),
        "{no_gateway:?}"
    );
    assert!(no_gateway.stderr.contains("404"), "{no_gateway:?}");
    let down = closed_relay();
    let args = through(&["send", &alice, "hi"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let closed = run(&down, &bob_dir, &args, "").await;
    assert_eq!(closed.code, 4, "{closed:?}");
    assert!(
        closed.stderr.contains("cannot fetch the OHTTP key configuration"),
        "{closed:?}"
    );
    // The OHTTP relay down: unreachable, naming it.
    drop(ohttp_relay);
    let gone = run_through(&bob_dir, &["send", &alice, "hi"], "").await;
    assert_eq!(gone.code, 4, "{gone:?}");
    assert!(gone.stderr.contains("through the OHTTP relay"), "{gone:?}");
    let bad = run(
        &gateway,
        &bob_dir,
        &["--ohttp-relay", "ohttp.example", "send", &alice, "x"],
        "",
    )
    .await;
    assert_eq!(bad.code, 3, "{bad:?}");
    assert!(bad.stderr.contains("--ohttp-relay must be"), "{bad:?}");
}

/// A pin file as the CLI writes it.
fn json_pin(gateway: &str, keys: &[u8]) -> String {
    use base64::Engine;
    serde_json::json!({
        "gateway": gateway,
        "key_config": base64::engine::general_purpose::STANDARD.encode(keys),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ohttp_key_is_followed_and_kept() {
    use tidings_tests::tidings_relay::clock::ManualClock;
    require_backend!();
    const ROTATION_S: i64 = 3600;
    const GRACE_S: i64 = 600;
    // The start of an epoch plus a minute. Only unsigned calls (send) are made, so the
    // relay's clock being ahead of this machine's does not matter.
    let clock = ManualClock::new((1_900_000_000 / ROTATION_S * ROTATION_S + 60) * 1000);
    let relay = TestRelay::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .configure(|c| {
            with_gateway(c);
            c.ohttp.rotation_s = ROTATION_S as u64;
            c.ohttp.grace_s = GRACE_S as u64;
        })
        .start()
        .await;
    let gateway_addr = relay.relay().ohttp_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ohttp_relay = OhttpRelay::start(&ohttp_relay_script(tmp.path()), gateway_addr).await;
    let gateway = format!("http://{gateway_addr}");
    let via = ohttp_relay.url();
    let dir = tmp.path().join("alice");
    let (bob, _) = create(&gateway, &tmp.path().join("bob")).await;
    let send = async |text: &str| run(&gateway, &dir, &["--ohttp-relay", &via, "send", &bob, text], "").await;
    run(&gateway, &dir, &["--ohttp-relay", &via, "account", "create"], "")
        .await
        .ok();
    send("before").await.ok();
    let old_keys = pinned(&dir).expect("pinned");

    clock.advance_ms(ROTATION_S * 1000);
    let new_keys = tidings_tests::ohttp::fetch_key_config(gateway_addr).await;
    assert_ne!(new_keys, old_keys, "rotated");
    let fetched = ohttp_requests(&relay, "keys").await;
    send("in grace").await.ok();
    assert_eq!(
        pinned(&dir),
        Some(new_keys.clone()),
        "moved to the new key and kept it"
    );
    clock.advance_ms(GRACE_S * 1000);
    send("after grace").await.ok();
    assert_eq!(
        ohttp_requests(&relay, "keys").await,
        fetched,
        "no fetch was needed"
    );
    drop(ohttp_relay);
}

// ---- Web Push (tidings push) ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_push_subscription_gets_one_push_that_the_devices_key_opens() {
    use base64::{
        Engine,
        engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD},
    };
    use tidings_tests::push::{APP_ID, PUSH_WAIT, PushRig};
    require_backend!();
    let rig = PushRig::start().await;
    let url = rig.relay().endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let (alice, _) = create(&url, &alice_dir).await;
    create(&url, &bob_dir).await;

    // What a browser or a UnifiedPush distributor would hand over: the endpoint and the
    // public keys (p256dh unpadded, auth padded: both are accepted).
    let sub = rig.webpush.subscribe(Some(rig.vapid.public_key));
    let p256dh = URL_SAFE_NO_PAD.encode(sub.subscriber.p256dh);
    let auth = URL_SAFE.encode(sub.subscriber.auth);
    let web_push = |p256dh: &str, auth: &str, app_id: &str| -> Vec<String> {
        [
            "push",
            "subscribe-web-push",
            "--endpoint",
            &sub.endpoint,
            "--p256dh",
            p256dh,
            "--auth",
            auth,
            "--app-id",
            app_id,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run_args = async |dir: &Path, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&url, dir, &args, "").await
    };
    let subscribed = run_args(&alice_dir, web_push(&p256dh, &auth, APP_ID))
        .await
        .ok()
        .json();
    assert_eq!(subscribed["subscribed"], true, "{subscribed}");
    assert_eq!(subscribed["added"], true, "{subscribed}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        subscribed["expires_ms"].as_i64().unwrap() > now_ms,
        "{subscribed}"
    );

    // One message to Alice: one push, which the subscriber decrypts to a tidings push's
    // `enc`, which only this install's push key opens.
    let sent = run(&url, &bob_dir, &["send", &alice, "hello over web push"], "")
        .await
        .ok()
        .json();
    rig.webpush
        .wait_for(1, PUSH_WAIT)
        .await
        .expect("the push arrives");
    rig.settle().await;
    let attempts = rig.webpush.attempts();
    assert_eq!(attempts.len(), 1, "exactly one push: {attempts:?}");
    assert_eq!(attempts[0].subscription, sub.id);
    let enc = attempts[0]
        .plaintext
        .as_deref()
        .expect("the subscriber decrypted it");
    let enc = std::str::from_utf8(enc).expect("the Web Push payload is the enc string");
    let key_hex = fs::read_to_string(alice_dir.join("key")).unwrap();
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut key).unwrap();
    let state = tidings_device_link::state::StateReader::open(&alice_dir, &key).unwrap();
    let note = tidings_device_link::client::decrypt_push(enc, state.push_key())
        .expect("this device's push key opens it");
    assert_eq!(note.account, hex::decode(&alice[2..]).unwrap());
    assert_eq!(note.namespace, 0);
    assert_eq!(Value::from(hex::encode(&note.hash)), sent["hash"]);

    // Subscribing again updates the registration; for people, the text says until when.
    let again = run_args(&alice_dir, web_push(&p256dh, &auth, APP_ID))
        .await
        .ok()
        .json();
    assert_eq!(again["added"], false, "{again}");
    let text = within(
        LIMIT,
        "subscribe, as text",
        Command::new(BIN)
            .arg("--relay")
            .arg(&url)
            .arg("--state-dir")
            .arg(&alice_dir)
            .args(web_push(&p256dh, &auth, APP_ID))
            .env_remove("TIDINGS_RELAY")
            .env_remove("TIDINGS_OHTTP_RELAY")
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{text:?}");
    assert!(
        stdout.contains("Updated the subscription of this device's Web Push endpoint"),
        "{stdout}"
    );
    assert!(stdout.contains("days from now (expires_ms "), "{stdout}");
    assert!(
        !stdout.contains(&sub.endpoint),
        "the endpoint is not printed: {stdout}"
    );

    // Bad input, found before anything is sent: exit 3 and what is wrong.
    let short = URL_SAFE_NO_PAD.encode(&sub.subscriber.p256dh[..64]);
    let wrong = run_args(&alice_dir, web_push(&short, &auth, APP_ID)).await;
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(wrong.stderr.contains("65 bytes starting with 0x04"), "{wrong:?}");
    let wrong = run_args(
        &alice_dir,
        web_push(&p256dh, &URL_SAFE_NO_PAD.encode([1u8; 8]), APP_ID),
    )
    .await;
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(wrong.stderr.contains("16 bytes"), "{wrong:?}");
    let wrong = run_args(&alice_dir, web_push("not*base64", &auth, APP_ID)).await;
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(wrong.stderr.contains("base64url"), "{wrong:?}");
    // What only the relay can tell: a point off the curve, an app without Web Push.
    let mut off_curve = [0u8; 65];
    off_curve[0] = 0x04;
    let refused = run_args(
        &alice_dir,
        web_push(&URL_SAFE_NO_PAD.encode(off_curve), &auth, APP_ID),
    )
    .await;
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("web_push.p256dh"), "{refused:?}");
    let refused = run_args(&alice_dir, web_push(&p256dh, &auth, "com.example.nothing")).await;
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("app_id"), "{refused:?}");

    // Unsubscribed: no more pushes.
    let gone = run(&url, &alice_dir, &["push", "unsubscribe"], "")
        .await
        .ok()
        .json();
    assert_eq!(gone["unsubscribed"], true);
    let gone = run(&url, &alice_dir, &["push", "unsubscribe"], "")
        .await
        .ok()
        .json();
    assert_eq!(gone["unsubscribed"], false, "nothing left to remove");
    run(&url, &bob_dir, &["send", &alice, "unheard"], "").await.ok();
    rig.settle().await;
    assert_eq!(rig.webpush.attempts().len(), 1, "no push after unsubscribing");
}
