//! The `tidings` binary end to end against a real relay (tidings-tests' `TestRelay`, in
//! this process): accounts, sealed messages, restore by phrase, linking by QR payload,
//! config converging between two state dirs, and bad input (a distinct exit code, a
//! clear message, nothing written). The phrase goes in on stdin, as a script's would.
//! Every wait is bounded; nothing is timed.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tidings_tests::{TestRelay, require_backend, within};
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
