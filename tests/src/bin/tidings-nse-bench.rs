//! `tidings-nse-bench`: what a notification extension pays (issue 11, "Benchmark").
//!
//! Writes a signed-in state directory with `--contacts` contacts (10 000 by default) the
//! way the account engine does (config replica and preview index), and a push carrying a
//! `--message-bytes` sealed message (2 KB by default) from one of them. Then, each in a
//! fresh child process so that the peak resident memory (`VmHWM`) is the extension's own:
//!
//! - `processor`: `NotificationProcessor::open` + `process_blocking` — what the iOS
//!   extension and Android's messaging service run (a current-thread runtime for the call).
//! - `replica`: opening the full config replica instead (`ConfigState::load`) and looking
//!   the sender up in it: the alternative the preview index replaces.
//! - `baseline`: a child that does nothing, for the process's own footprint.
//!
//! Prints the median time and the largest peak RSS of `--runs` runs per mode as a table,
//! or JSON with `--json`, against the targets (< 15 MB, < 50 ms for `processor`). Exits 1
//! when a result is wrong (no name, no text, not journaled, a thread left behind), 2 when
//! the run could not be carried out; missed targets are reported, not failures. Linux
//! only (it reads /proc). Build with `--release` for meaningful figures.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tidings_device_link::{
    client::PushNotification,
    config::{ConfigState, Contact, DeviceId, Previews},
    identity::{Identity, account_id},
    notification::{NotificationProcessor, save_preview_index},
    sealed::{OVERHEAD, seal_message, sealed_len},
    state::{DeviceState, StateReader},
};
use tidings_proto::{hash::message_hash, push::encrypt_push, random_bytes};

/// Peak RSS goal of the extension, in bytes (decimal megabytes, the stricter reading).
const TARGET_RSS: f64 = 15_000_000.0;
/// Time goal of open + process.
const TARGET_MS: f64 = 50.0;
/// The sender's name, checked in the child's result.
const SENDER_NAME: &str = "Ada Lovelace";

#[derive(Debug, Parser)]
#[command(
    name = "tidings-nse-bench",
    about = "Notification extension cost: time and peak RSS"
)]
struct Args {
    /// Contacts in the account's state.
    #[arg(long, default_value_t = 10_000)]
    contacts: usize,
    /// Size of the sealed message in the push (a padding bucket: 256, 512, 1024, 2048).
    #[arg(long, default_value_t = 2048)]
    message_bytes: usize,
    /// Fresh processes per mode.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: run one measurement (`MODE STATE_DIR KEY_HEX ENC_FILE`) and print it.
    #[arg(long, num_args = 4, hide = true)]
    child: Option<Vec<String>>,
}

/// What one child measured.
#[derive(Debug, Serialize, Deserialize)]
struct Sample {
    mode: String,
    /// Opening (state, account, contacts and settings).
    open_ms: f64,
    /// Processing the push (nothing for `baseline`).
    process_ms: f64,
    /// Peak resident memory of the whole process, in bytes.
    peak_rss: u64,
    /// Threads of the process once done.
    threads: usize,
    /// The result named the sender, showed the text and was journaled.
    correct: bool,
}

/// One mode's figures over its runs.
#[derive(Debug, Serialize)]
struct ModeReport {
    mode: String,
    runs: usize,
    median_total_ms: f64,
    median_open_ms: f64,
    median_process_ms: f64,
    max_peak_rss_mb: f64,
    max_threads: usize,
    all_correct: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(child) = &args.child {
        return match run_child(child) {
            Ok(sample) => {
                println!("{}", serde_json::to_string(&sample).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tidings-nse-bench child: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run_parent(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("tidings-nse-bench: a result was wrong (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tidings-nse-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_parent(args: &Args) -> anyhow::Result<bool> {
    if sealed_len(args.message_bytes.saturating_sub(OVERHEAD)) != args.message_bytes {
        bail!(
            "--message-bytes {} is not a sealed message size",
            args.message_bytes
        );
    }
    let dir = tempfile::tempdir().context("creating the state directory")?;
    let key: [u8; 32] = random_bytes();
    let setup = Instant::now();
    let enc = write_state(dir.path(), &key, args.contacts, args.message_bytes)?;
    let enc_file = dir.path().join("push.enc");
    fs::write(&enc_file, enc).context("writing the push")?;
    let config_bytes = fs::metadata(dir.path().join("blobs/config.sealed"))?.len();
    let index_bytes = fs::metadata(dir.path().join("blobs/preview-index.sealed"))?.len();
    let setup_s = setup.elapsed().as_secs_f64();

    let mut reports = Vec::new();
    for mode in ["baseline", "processor", "replica"] {
        let mut samples = Vec::with_capacity(args.runs);
        for _ in 0..args.runs.max(1) {
            samples.push(spawn_child(mode, dir.path(), &key, &enc_file)?);
        }
        reports.push(summarise(mode, &samples));
    }
    let ok = reports.iter().all(|r| r.all_correct);
    if args.json {
        let out = serde_json::json!({
            "contacts": args.contacts,
            "message_bytes": args.message_bytes,
            "config_blob_bytes": config_bytes,
            "preview_index_bytes": index_bytes,
            "targets": { "processor_peak_rss_mb_below": TARGET_RSS / 1e6, "processor_total_ms_below": TARGET_MS },
            "modes": reports,
        });
        println!("{out}");
    } else {
        print_table(args, &reports, config_bytes, index_bytes, setup_s);
    }
    Ok(ok)
}

/// A signed-in state with `contacts` contacts, full previews, and the push of a sealed
/// message of `message_bytes` from one of them; returns the push's `enc`.
fn write_state(dir: &Path, key: &[u8; 32], contacts: usize, message_bytes: usize) -> anyhow::Result<String> {
    let mut disk = DeviceState::open(dir, key)?;
    let me = Identity::create();
    let ada = Identity::create();
    disk.set_identity(&me)?;
    let mut config = ConfigState::new(DeviceId(disk.device_id()));
    for i in 0..contacts.saturating_sub(1) {
        config.add_contact(&Contact {
            account_id: account_id(&random_bytes()),
            name: format!("Contact number {i:05}"),
            nickname: (i % 4 == 0).then(|| format!("Nick {i}")),
            approved: true,
            blocked: i % 97 == 0,
            muted_until: (i % 89 == 0).then_some(4_000_000_000_000),
        })?;
    }
    config.add_contact(&Contact {
        account_id: ada.account_id(),
        name: SENDER_NAME.into(),
        approved: true,
        ..Contact::default()
    })?;
    config.set_previews(Previews {
        show_sender: true,
        show_content: true,
    });
    disk.put_blob("config", &config.save())?;
    save_preview_index(&mut disk, &config)?;

    let text: String = "The quick brown fox jumps over the lazy dog. "
        .chars()
        .cycle()
        .take(message_bytes - OVERHEAD)
        .collect();
    let sealed = seal_message(&ada, &me.account(), text.as_bytes())?;
    let account = me.account();
    let note = PushNotification {
        account: account.to_vec(),
        namespace: 0,
        hash: message_hash(&account, 0, &sealed).to_vec(),
        seq: 1,
        created_ms: 1,
        expires_ms: i64::MAX,
        data_len: u32::try_from(sealed.len())?,
        data: sealed,
        data_omitted: false,
    };
    Ok(encrypt_push(disk.push_key(), &note))
}

fn spawn_child(mode: &str, dir: &Path, key: &[u8; 32], enc_file: &Path) -> anyhow::Result<Sample> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let out = Command::new(exe)
        .arg("--child")
        .args([
            mode,
            &dir.display().to_string(),
            &hex::encode(key),
            &enc_file.display().to_string(),
        ])
        .output()
        .context("running a child")?;
    if !out.status.success() {
        bail!(
            "the {mode} child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the child's figures")
}

fn run_child(args: &[String]) -> anyhow::Result<Sample> {
    let [mode, dir, key, enc_file] = args else {
        bail!("--child takes MODE STATE_DIR KEY_HEX ENC_FILE");
    };
    let mut key_bytes = [0u8; 32];
    hex::decode_to_slice(key, &mut key_bytes).context("the key")?;
    let enc = fs::read_to_string(enc_file).context("reading the push")?;
    let dir = PathBuf::from(dir);
    let (open, process, correct) = match mode.as_str() {
        "baseline" => (Duration::ZERO, Duration::ZERO, true),
        "processor" => {
            let start = Instant::now();
            let processor = NotificationProcessor::open(&dir, &key_bytes, "http://127.0.0.1:9")?;
            let opened = start.elapsed();
            let n = processor.process_blocking(&enc, Duration::from_secs(5))?;
            let correct = n.preview.title == SENDER_NAME && n.preview.body.is_some() && n.journaled;
            (opened, start.elapsed() - opened, correct)
        }
        "replica" => {
            let start = Instant::now();
            let reader = StateReader::open(&dir, &key_bytes)?;
            let identity = reader.identity()?.context("signed in")?;
            let config = ConfigState::load(&reader.get_blob("config")?.context("a config blob")?)?;
            let opened = start.elapsed();
            let note = tidings_device_link::client::decrypt_push(&enc, reader.push_key())?;
            let message = tidings_device_link::sealed::open_message(&identity, &note.data)?;
            let name = config.contact(&account_id(&message.sender)).map(|c| c.name);
            (
                opened,
                start.elapsed() - opened,
                name.as_deref() == Some(SENDER_NAME),
            )
        }
        other => bail!("unknown mode {other}"),
    };
    let (peak_rss, threads) = (peak_rss()?, threads()?);
    Ok(Sample {
        mode: mode.clone(),
        open_ms: open.as_secs_f64() * 1e3,
        process_ms: process.as_secs_f64() * 1e3,
        peak_rss,
        threads,
        // An extension that leaves a thread running keeps the process alive.
        correct: correct && threads == 1,
    })
}

/// `VmHWM` of this process, in bytes.
fn peak_rss() -> anyhow::Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib * 1024)
}

fn threads() -> anyhow::Result<usize> {
    Ok(fs::read_dir("/proc/self/task")
        .context("reading /proc/self/task")?
        .count())
}

fn summarise(mode: &str, samples: &[Sample]) -> ModeReport {
    let median = |f: &dyn Fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    ModeReport {
        mode: mode.to_owned(),
        runs: samples.len(),
        median_total_ms: median(&|s| s.open_ms + s.process_ms),
        median_open_ms: median(&|s| s.open_ms),
        median_process_ms: median(&|s| s.process_ms),
        max_peak_rss_mb: samples.iter().map(|s| s.peak_rss).max().unwrap_or(0) as f64 / 1e6,
        max_threads: samples.iter().map(|s| s.threads).max().unwrap_or(0),
        all_correct: samples.iter().all(|s| s.correct),
    }
}

fn print_table(args: &Args, reports: &[ModeReport], config_bytes: u64, index_bytes: u64, setup_s: f64) {
    println!(
        "notification extension: {} contacts, {}-byte sealed message in the push ({} runs per mode, each a fresh process)",
        args.contacts, args.message_bytes, args.runs
    );
    println!(
        "state: config replica {:.2} MB, preview index {:.2} MB (written in {setup_s:.1} s)",
        config_bytes as f64 / 1e6,
        index_bytes as f64 / 1e6
    );
    println!(
        "{:<10} {:>10} {:>9} {:>11} {:>14} {:>8} {:>8}",
        "mode", "total ms", "open ms", "process ms", "peak RSS MB", "threads", "correct"
    );
    for r in reports {
        println!(
            "{:<10} {:>10.2} {:>9.2} {:>11.2} {:>14.2} {:>8} {:>8}",
            r.mode,
            r.median_total_ms,
            r.median_open_ms,
            r.median_process_ms,
            r.max_peak_rss_mb,
            r.max_threads,
            r.all_correct
        );
    }
    if let Some(p) = reports.iter().find(|r| r.mode == "processor") {
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        println!(
            "targets (processor): peak RSS < {:.0} MB: {} ({:.2}); open + process < {TARGET_MS:.0} ms: {} ({:.2})",
            TARGET_RSS / 1e6,
            verdict(p.max_peak_rss_mb * 1e6 < TARGET_RSS),
            p.max_peak_rss_mb,
            verdict(p.median_total_ms < TARGET_MS),
            p.median_total_ms
        );
    }
    if cfg!(debug_assertions) {
        println!("debug build: figures are not representative (use --release)");
    }
}
