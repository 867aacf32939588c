//! `tidings-bench push`: Fast Mode figures of issues 3 and 14 — end-to-end pushes/s (Store
//! → mock provider receipt) with many subscribed devices spread over APNs and FCM (and, with
//! `--services`, Web Push and Huawei Push Kit), and the Store-ack → receipt latency at a
//! fixed message rate. With Web Push in the mix it also states what its RFC 8291
//! encryption (an ECDH and an HKDF per push) costs the relay.
//!
//! The mock providers run in this process; the relay runs as its own process. Each
//! receipt is decrypted with its device's push key, so every push is matched to the very
//! message it announces (and duplicates or strays are caught). The throughput phase runs
//! for `--duration` seconds (10 by default) and reports, beside pushes/s, the relay's CPU
//! time per push (issue 17), user and system, and by thread.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::Context;
use ed25519_dalek::SigningKey;
use tidings_device_link::client::{ClientOptions, RelayClient, RetryPolicy};
use tidings_mock_push::{
    ApnsKey, ApnsMockConfig, FcmMockConfig, HmsMockConfig, MockApns, MockFcm, MockHms, MockWebPush,
    ServiceAccount, Transport, VapidKeyPair, WebPushMockConfig, WebPushSubscription,
};
use tidings_proto::v1::{DeviceRegistration, PushService, StoreRequest, WebPushSubscription as WireWebPush};

use super::{
    MB, data_for, describe_failures, environment_notes,
    load::{CALL_LIMIT, Limit, closed_loop},
    pool::Pool,
    relay::{Relay, RelayArgs},
    report::{Report, Target},
    stats::{CpuMeter, Latencies},
};

const APP_ID: &str = "com.example.tidings-bench";
const KEY_ID: &str = "BENCHKEY01";
const TEAM_ID: &str = "BENCHTEAM1";
const PROJECT: &str = "tidings-bench";
const BENCH_TTL_MS: i64 = 10 * 60 * 1000;
const HMS_APP_ID: &str = "104000001";

/// A push service the devices of the bench may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum BenchService {
    /// APNs (mock).
    Apns,
    /// FCM (mock).
    Fcm,
    /// Web Push (mock push service that decrypts every message as the subscriber).
    Webpush,
    /// Huawei Push Kit (mock).
    Hms,
}

/// The services of the issue 3 figures.
pub fn default_services() -> Vec<BenchService> {
    vec![BenchService::Apns, BenchService::Fcm]
}

/// Options of the `push` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// Where the relay comes from.
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Subscribed devices, one account each, spread evenly over `--services`.
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// The push services the devices are spread over, round robin
    /// (`apns,fcm,webpush,hms` for all four).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = default_services())]
    pub services: Vec<BenchService>,
    /// Seconds the throughput phase issues Stores for (closed loop from `--clients`
    /// clients): at least 10 s by default, so that one run is not a two-second sample.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop the throughput phase after this many Stores if `--duration` has not run out
    /// first (messages go to the devices round robin).
    #[arg(long)]
    pub count: Option<u64>,
    /// Concurrent clients storing (and subscribing).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections those clients share.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Messages per second of the latency phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Whether devices ask for the message bytes inside the push.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub want_data: bool,
    /// The relay's `[push] concurrency` (default: the relay's own default).
    #[arg(long)]
    pub push_concurrency: Option<u32>,
    /// Serve the mocks over TLS instead of h2c.
    #[arg(long)]
    pub tls: bool,
    /// Longest wait for a phase's pushes to arrive, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub drain_timeout: f64,
}

/// One subscribed device.
pub(super) struct Device {
    key: SigningKey,
    account: [u8; 32],
    push_key: [u8; 32],
    /// The provider token; for Web Push, the subscription id at the mock.
    token: String,
    service: BenchService,
    web_push: Option<WebPushSubscription>,
}

/// The mock providers and the credentials the relay uses with them.
pub(super) struct Providers {
    pub(super) apns: MockApns,
    pub(super) fcm: MockFcm,
    pub(super) webpush: Option<MockWebPush>,
    pub(super) hms: Option<MockHms>,
    vapid: VapidKeyPair,
    _files: tempfile::TempDir,
    pub(super) config: String,
}

impl Providers {
    /// Stops every mock.
    pub(super) async fn shutdown(self) {
        self.apns.shutdown().await;
        self.fcm.shutdown().await;
        if let Some(w) = self.webpush {
            w.shutdown().await;
        }
        if let Some(h) = self.hms {
            h.shutdown().await;
        }
    }

    pub(super) fn clear(&self) {
        self.apns.clear();
        self.fcm.clear();
        if let Some(w) = &self.webpush {
            w.clear();
        }
        if let Some(h) = &self.hms {
            h.clear();
        }
    }
}

/// Send and acknowledgement times of each message of a phase, in µs after `base` + 1
/// (0: not yet, or failed).
struct Ledger {
    base: SystemTime,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Ledger {
    fn new(count: usize) -> Self {
        Self {
            base: SystemTime::now(),
            sent: (0..count).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..count).map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
            first_error: std::sync::Mutex::new(None),
        }
    }

    fn stamp(&self, slot: &AtomicU64) {
        let us = SystemTime::now()
            .duration_since(self.base)
            .unwrap_or_default()
            .as_micros();
        slot.store(u64::try_from(us).unwrap_or(u64::MAX - 1) + 1, Ordering::Relaxed);
    }

    fn fail(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        first.get_or_insert(e);
    }

    fn micros(slot: &AtomicU64) -> Option<u64> {
        slot.load(Ordering::Relaxed).checked_sub(1)
    }

    fn acked_count(&self) -> usize {
        self.acked.iter().filter(|a| Self::micros(a).is_some()).count()
    }

    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A push as a mock received it.
struct Receipt {
    token: String,
    enc: Option<String>,
    at: SystemTime,
}

/// What the receipts of a phase say about its messages.
#[derive(Default)]
pub(super) struct Matched {
    /// Acknowledged messages pushed at least once.
    pub(super) delivered: usize,
    pub(super) duplicates: usize,
    /// Receipts that did not decrypt or named no message of the phase.
    strays: usize,
    /// Latest receipt, µs after the ledger's base.
    last_us: u64,
    after_ack: Latencies,
    from_send: Latencies,
    before_ack: usize,
}

/// Runs the scenario and reports.
pub async fn run(args: PushArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("push");
    let load_before = super::stats::load_average();
    settings(&mut report, &args);
    eprintln!("[push] starting the mock providers…");
    let providers = start_providers(&args).await?;
    let relay = Relay::start(&args.relay, &providers.config).await?;
    report.note(relay.describe());
    report.note(format!(
        "the mock providers ({}; {}) run inside the bench process, so 'bench CPU' includes them{}",
        services_label(&args.services),
        if args.tls { "TLS" } else { "h2c / HTTP/1.1" },
        if args.services.contains(&BenchService::Webpush) {
            " (the mock Web Push service decrypts every message as its subscriber would)"
        } else {
            ""
        }
    ));
    let result = measure(&args, &relay, &providers, &mut report).await;
    if let Some(peak) = relay.rss_peak() {
        report.metric(
            "relay_rss_peak_mb",
            "relay RSS, peak of the run",
            peak as f64 / MB,
            "MB",
            None,
        );
    }
    if result.is_err() {
        eprintln!("relay log tail:\n{}", relay.log_tail());
    }
    relay.stop().await;
    providers.shutdown().await;
    result?;
    environment_notes(&mut report, load_before);
    Ok(report)
}

fn services_label(services: &[BenchService]) -> String {
    services
        .iter()
        .map(|s| format!("{s:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

fn settings(report: &mut Report, args: &PushArgs) {
    report.setting("devices", args.devices);
    report.setting("services", services_label(&args.services));
    report.setting("duration", args.duration);
    if let Some(count) = args.count {
        report.setting("count", count);
    }
    report.setting("clients", args.clients);
    report.setting("connections", args.connections);
    report.setting("rate", args.rate);
    report.setting("seconds", args.seconds);
    report.setting("size", args.size);
    report.setting("want_data", args.want_data);
    if let Some(c) = args.push_concurrency {
        report.setting("push_concurrency", c);
    }
}

/// Stores/s no run reaches on this machine: the ledger of a phase bounded only by its
/// duration has room for this many per second.
const LEDGER_RATE: f64 = 50_000.0;

/// The most Stores the throughput phase issues: `--count`, or what `--duration` allows.
fn throughput_limit(args: &PushArgs) -> Limit {
    let duration = Duration::from_secs_f64(args.duration.max(0.001));
    let room = (duration.as_secs_f64() * LEDGER_RATE).ceil() as u64;
    Limit {
        count: Some(args.count.unwrap_or(room)),
        duration,
    }
}

pub(super) async fn start_providers(args: &PushArgs) -> anyhow::Result<Providers> {
    let transport = if args.tls { Transport::Tls } else { Transport::H2c };
    let files = tempfile::Builder::new()
        .prefix("tidings-bench-creds")
        .tempdir()
        .context("temp dir for credentials")?;
    let key = ApnsKey::generate(KEY_ID, TEAM_ID);
    let apns = MockApns::start(ApnsMockConfig::new(&key, APP_ID, transport))
        .await
        .context("mock APNs")?;
    let mut account = ServiceAccount::generate(PROJECT);
    let fcm = MockFcm::start(FcmMockConfig::new(&account, transport))
        .await
        .context("mock FCM")?;
    account.token_uri = fcm.token_uri();
    let p8 = key.write_p8(files.path())?;
    let sa = account.write_json(files.path())?;
    let ca = |name: &str, pem: Option<&str>| -> anyhow::Result<String> {
        match pem {
            Some(pem) => {
                let path = files.path().join(name);
                std::fs::write(&path, pem)?;
                Ok(format!("ca_file = {}\n", toml_path(&path)))
            }
            None => Ok(String::new()),
        }
    };
    let apns_ca = ca("apns-ca.pem", apns.ca_pem())?;
    let fcm_ca = ca("fcm-ca.pem", fcm.ca_pem())?;
    let push = args
        .push_concurrency
        .map_or(String::new(), |c| format!("[push]\nconcurrency = {c}\n\n"));
    let mut config = format!(
        "{push}[[apps]]\nid = \"{APP_ID}\"\n\
         [apps.apns]\nkey_file = {}\nkey_id = \"{KEY_ID}\"\nteam_id = \"{TEAM_ID}\"\ntopic = \"{APP_ID}\"\n\
         endpoint = \"{apns_url}\"\nsandbox_endpoint = \"{apns_url}\"\n{apns_ca}\
         [apps.fcm]\nservice_account_file = {}\nendpoint = \"{fcm_url}\"\n{fcm_ca}",
        toml_path(&p8),
        toml_path(&sa),
        apns_url = apns.endpoint(),
        fcm_url = fcm.endpoint(),
    );
    let vapid = VapidKeyPair::generate();
    let webpush = if args.services.contains(&BenchService::Webpush) {
        let mock = MockWebPush::start(WebPushMockConfig::new(transport))
            .await
            .context("mock Web Push")?;
        let vapid_file = vapid.write_pem(files.path())?;
        config.push_str(&format!(
            "[apps.webpush]\nvapid_key_file = {}\nsubject = \"mailto:bench@example.com\"\n",
            toml_path(&vapid_file)
        ));
        // A top-level table: before the first [[apps]] (and `[push]`, which is one too).
        let webpush_ca = ca("webpush-ca.pem", mock.ca_pem())?;
        config = format!(
            "[webpush]\nallow_http = {}\nallow_networks = [\"127.0.0.1/32\"]\n{webpush_ca}\n{config}",
            !args.tls
        );
        Some(mock)
    } else {
        None
    };
    let hms = if args.services.contains(&BenchService::Hms) {
        let mock = MockHms::start(HmsMockConfig::new(HMS_APP_ID, transport))
            .await
            .context("mock HMS")?;
        let secret = files.path().join("hms-secret");
        std::fs::write(&secret, mock.client_secret())?;
        let hms_ca = ca("hms-ca.pem", mock.ca_pem())?;
        config.push_str(&format!(
            "[apps.hms]\napp_id = \"{HMS_APP_ID}\"\nclient_secret_file = {}\nendpoint = \"{}\"\n\
             token_endpoint = \"{}\"\n{hms_ca}",
            toml_path(&secret),
            mock.endpoint(),
            mock.token_endpoint(),
        ));
        Some(mock)
    } else {
        None
    };
    Ok(Providers {
        apns,
        fcm,
        webpush,
        hms,
        vapid,
        _files: files,
        config,
    })
}

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn measure(
    args: &PushArgs,
    relay: &Relay,
    providers: &Providers,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pool = Pool::connect(relay.addr, args.connections).await?;
    let devices = Arc::new(make_devices_over(args.devices.max(1), &args.services, providers));
    subscribe_all(args, &pool, &devices, relay, report).await?;

    eprintln!(
        "[push] throughput: Stores for {} s{} to {} devices…",
        args.duration,
        args.count.map_or(String::new(), |c| format!(" (at most {c})")),
        devices.len()
    );
    throughput_phase(args, &pool, &devices, relay, providers, report).await?;

    providers.clear();
    eprintln!("[push] latency: {} messages/s for {} s…", args.rate, args.seconds);
    latency_phase(args, &pool, &devices, relay, providers, report).await
}

/// `n` devices, half APNs and half FCM.
pub(super) fn make_devices(n: usize) -> Vec<Device> {
    (0..n)
        .map(|i| {
            let service = if i % 2 == 0 {
                BenchService::Apns
            } else {
                BenchService::Fcm
            };
            new_device(service, None)
        })
        .collect()
}

/// `n` devices spread round robin over `services` (Web Push ones subscribed at the mock
/// with the app's VAPID key).
pub(super) fn make_devices_over(n: usize, services: &[BenchService], providers: &Providers) -> Vec<Device> {
    let services = if services.is_empty() {
        default_services()
    } else {
        services.to_vec()
    };
    (0..n)
        .map(|i| {
            let service = services[i % services.len()];
            let sub = match (service, &providers.webpush) {
                (BenchService::Webpush, Some(mock)) => Some(mock.subscribe(Some(providers.vapid.public_key))),
                _ => None,
            };
            new_device(service, sub)
        })
        .collect()
}

fn new_device(service: BenchService, web_push: Option<WebPushSubscription>) -> Device {
    let key = SigningKey::from_bytes(&tidings_proto::random_bytes());
    let token = match (service, &web_push) {
        (BenchService::Apns, _) => hex::encode(tidings_proto::random_bytes::<32>()),
        (BenchService::Fcm, _) => format!("bench:{}", hex::encode(tidings_proto::random_bytes::<64>())),
        (BenchService::Hms, _) => format!("IQAAAAbench{}", hex::encode(tidings_proto::random_bytes::<48>())),
        (BenchService::Webpush, Some(sub)) => sub.id.clone(),
        (BenchService::Webpush, None) => String::new(),
    };
    Device {
        account: key.verifying_key().to_bytes(),
        key,
        push_key: tidings_proto::random_bytes(),
        token,
        service,
        web_push,
    }
}

pub(super) async fn subscribe_all(
    args: &PushArgs,
    pool: &Pool,
    devices: &Arc<Vec<Device>>,
    relay: &Relay,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("[push] subscribing {} devices…", devices.len());
    let options = ClientOptions {
        retry: RetryPolicy::no_retry(),
        rpc_timeout: CALL_LIMIT,
        ..ClientOptions::default()
    };
    let mut clients = Vec::with_capacity(pool.len());
    for i in 0..pool.len() {
        let client = RelayClient::from_channel(pool.channel(i), options.clone());
        // Caches the relay's sealing key in the client.
        client.relay_info().await.context("GetRelayInfo")?;
        clients.push(client);
    }
    let clients = Arc::new(clients);
    let wanted = devices.len() as u64;
    let devices = Arc::clone(devices);
    let want_data = args.want_data;
    let limit = Limit {
        count: Some(devices.len() as u64),
        duration: Duration::from_secs(600),
    };
    let out = closed_loop(args.clients, limit, relay.pid(), move |n, c| {
        let (clients, devices) = (Arc::clone(&clients), Arc::clone(&devices));
        async move {
            let d = &devices[n as usize];
            let registration = DeviceRegistration {
                service: match d.service {
                    BenchService::Apns => PushService::Apns,
                    BenchService::Fcm => PushService::Fcm,
                    BenchService::Webpush => PushService::Webpush,
                    BenchService::Hms => PushService::Hms,
                } as i32,
                token: if d.web_push.is_some() {
                    String::new()
                } else {
                    d.token.clone()
                },
                web_push: d.web_push.as_ref().map(|w| WireWebPush {
                    endpoint: w.endpoint.clone(),
                    p256dh: w.subscriber.p256dh.to_vec(),
                    auth: w.subscriber.auth.to_vec(),
                }),
                app_id: APP_ID.to_owned(),
                push_key: d.push_key.to_vec(),
                device_id: tidings_proto::random_bytes::<16>().to_vec(),
            };
            let client = &clients[c % clients.len()];
            client
                .subscribe(&d.key, &[0], want_data, registration)
                .await
                .map_err(|e| e.to_string())?;
            Ok(1)
        }
    })
    .await;
    report.metric("subscribes_per_s", "Subscribes/s", out.rate(), "/s", None);
    report.cpu("subscribe", "Subscribe phase", out.cpu);
    let ok = out.errors == 0 && out.ok == wanted;
    report.check(
        "every device subscribed",
        ok,
        describe_failures(out.ok, out.errors, out.first_error.as_deref()),
    );
    anyhow::ensure!(ok, "subscribing failed: {:?}", out.first_error);
    Ok(())
}

/// The Store of message `n` of a phase: to device `n % devices`.
pub(super) fn store_request(devices: &[Device], n: u64, run: &[u8; 8], size: usize) -> StoreRequest {
    StoreRequest {
        account: devices[n as usize % devices.len()].account.to_vec(),
        namespace: 0,
        data: data_for(n, run, size),
        ttl_ms: BENCH_TTL_MS,
        ..Default::default()
    }
}

/// What one closed-loop phase of Stores and the pushes they caused gave.
pub(super) struct PushPhase {
    /// The Stores.
    pub(super) stores: super::load::Outcome,
    /// The receipts, matched to the Stores.
    pub(super) matched: Matched,
    /// Acknowledged Stores.
    pub(super) acked: usize,
    /// How busy the relay and the bench were, from the first Store to the last receipt.
    pub(super) cpu: super::stats::CpuUse,
    /// Relay CPU seconds (user + system, `/proc/PID/stat`) over the same span.
    pub(super) relay_cpu_s: Option<f64>,
    /// The same split into user and system time, and by thread name.
    pub(super) relay_threads: Option<ThreadCpu>,
    /// First Store → last receipt, in seconds.
    pub(super) span_s: f64,
}

/// Stores from `--clients` clients until `limit`, to the devices round robin, then waits
/// for every acknowledged Store's push and matches the receipts to the messages.
pub(super) async fn push_phase(
    args: &PushArgs,
    pool: &Pool,
    devices: &Arc<Vec<Device>>,
    relay: &Relay,
    providers: &Providers,
    limit: Limit,
) -> anyhow::Result<PushPhase> {
    let slots = limit.count.context("a push phase needs a Store count bound")?;
    let ledger = Arc::new(Ledger::new(usize::try_from(slots)?));
    let run = tidings_proto::random_bytes::<8>();
    let meter = CpuMeter::start(relay.pid());
    let cpu_before = relay.cpu_seconds();
    let threads_before = relay.pid().and_then(ThreadCpu::read);
    let stores = {
        let (pool, devices, ledger, size) =
            (pool.clone(), Arc::clone(devices), Arc::clone(&ledger), args.size);
        closed_loop(args.clients, limit, relay.pid(), move |n, c| {
            let mut mailbox = pool.mailbox(c);
            let request = store_request(&devices, n, &run, size);
            let ledger = Arc::clone(&ledger);
            async move {
                ledger.stamp(&ledger.sent[n as usize]);
                let result = mailbox.store(request).await;
                match result {
                    Ok(_) => {
                        ledger.stamp(&ledger.acked[n as usize]);
                        Ok(1)
                    }
                    Err(s) => Err(s.to_string()),
                }
            }
        })
        .await
    };
    let receipts = await_receipts(args, devices, &ledger, providers).await;
    let cpu = meter.stop();
    let relay_cpu_s = match (cpu_before, relay.cpu_seconds()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let relay_threads = match (threads_before, relay.pid().and_then(ThreadCpu::read)) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    let matched = match_receipts(&receipts, devices, &ledger, &run, args.size);
    let span_s = matched.last_us as f64 / 1e6;
    Ok(PushPhase {
        stores,
        acked: ledger.acked_count(),
        matched,
        cpu,
        relay_cpu_s,
        relay_threads,
        span_s,
    })
}

/// CPU time of a process in clock ticks (`/proc/PID/stat`, `/proc/PID/task/*/stat`): user
/// and system time of the whole process (threads that exited included) and of each live
/// thread, by thread id with its name.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ThreadCpu {
    user: u64,
    system: u64,
    threads: HashMap<u32, (String, u64, u64)>,
}

/// `/proc/PID/stat` → (name, utime, stime) in ticks.
fn stat_ticks(text: &str) -> Option<(String, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    Some((name, fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

impl ThreadCpu {
    fn read(pid: u32) -> Option<ThreadCpu> {
        let (_, user, system) = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        let mut threads = HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if let Some(t) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|text| stat_ticks(&text))
            {
                threads.insert(tid, t);
            }
        }
        Some(ThreadCpu {
            user,
            system,
            threads,
        })
    }

    /// What was spent between `before` and this reading (threads born meanwhile from 0).
    fn since(&self, before: &ThreadCpu) -> ThreadCpu {
        let threads = self
            .threads
            .iter()
            .map(|(tid, (name, u, s))| {
                let (u0, s0) = before.threads.get(tid).map_or((0, 0), |(_, u, s)| (*u, *s));
                (*tid, (name.clone(), u.saturating_sub(u0), s.saturating_sub(s0)))
            })
            .collect();
        ThreadCpu {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
            threads,
        }
    }

    /// Per thread name: (user, system) seconds, heaviest first; threads that exited
    /// during the span (the writer's log threads, idle blocking-pool threads) as one line.
    fn by_name(&self) -> Vec<(String, f64, f64)> {
        let mut names: HashMap<&str, (u64, u64)> = HashMap::new();
        for (name, u, s) in self.threads.values() {
            let e = names.entry(name.as_str()).or_default();
            e.0 += u;
            e.1 += s;
        }
        let live_u: u64 = names.values().map(|v| v.0).sum();
        let live_s: u64 = names.values().map(|v| v.1).sum();
        let tick = |t: u64| t as f64 / 100.0;
        let mut out: Vec<(String, f64, f64)> = names
            .into_iter()
            .map(|(n, (u, s))| (n.to_owned(), tick(u), tick(s)))
            .collect();
        out.push((
            "(threads that exited)".to_owned(),
            tick(self.user.saturating_sub(live_u)),
            tick(self.system.saturating_sub(live_s)),
        ));
        out.retain(|(_, u, s)| u + s > 0.0);
        out.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
        out
    }
}

pub(super) async fn throughput_phase(
    args: &PushArgs,
    pool: &Pool,
    devices: &Arc<Vec<Device>>,
    relay: &Relay,
    providers: &Providers,
    report: &mut Report,
) -> anyhow::Result<()> {
    let limit = throughput_limit(args);
    let phase = push_phase(args, pool, devices, relay, providers, limit).await?;
    let stores = &phase.stores;
    report.metric(
        "push_phase_seconds",
        "throughput phase: Stores issued for",
        stores.elapsed.as_secs_f64(),
        "s",
        None,
    );
    report.metric(
        "push_phase_stores_per_s",
        "throughput phase: Stores/s",
        stores.rate(),
        "/s",
        None,
    );
    report.check(
        "every Store acknowledged",
        stores.errors == 0,
        describe_failures(stores.ok, stores.errors, stores.first_error.as_deref()),
    );
    if limit.count.is_some_and(|c| stores.ok + stores.errors >= c) && args.count.is_none() {
        report.note(format!(
            "the throughput phase filled its ledger ({} Stores) before --duration ran out",
            stores.ok + stores.errors
        ));
    }
    let matched = &phase.matched;
    let span_s = phase.span_s;
    report.metric(
        "pushes_per_s",
        "end-to-end pushes/s (first Store → last receipt)",
        matched.delivered as f64 / span_s.max(1e-9),
        "/s",
        Some(Target::AtLeast(12_000.0)),
    );
    let per_push_us = |s: f64| s * 1e6 / (matched.delivered.max(1) as f64);
    if let Some(cpu_s) = phase.relay_cpu_s {
        report.metric(
            "relay_cpu_us_per_push",
            "relay CPU (user + system) per end-to-end push",
            per_push_us(cpu_s),
            "µs",
            Some(Target::Below(70.0)),
        );
    }
    if let Some(t) = &phase.relay_threads {
        report.metric(
            "relay_user_us_per_push",
            "… of which user time",
            per_push_us(t.user as f64 / 100.0),
            "µs",
            None,
        );
        report.metric(
            "relay_system_us_per_push",
            "… of which system time (kernel: sockets, futexes, fdatasync)",
            per_push_us(t.system as f64 / 100.0),
            "µs",
            None,
        );
        let threads: Vec<String> = t
            .by_name()
            .iter()
            .map(|(name, u, s)| format!("{name} {:.1} + {:.1} µs", per_push_us(*u), per_push_us(*s)))
            .collect();
        report.note(format!(
            "relay CPU per push by thread (user + system): {}",
            threads.join("; ")
        ));
    }
    report.latency(
        "throughput_push_latency",
        "under full load, Store ack → receipt",
        matched.after_ack.summary(),
        None,
    );
    if let (Some(cores), true) = (phase.cpu.relay_cores, providers.webpush.is_some()) {
        webpush_share(report, devices, matched, span_s, cores);
    }
    report.cpu("push_throughput", "throughput phase", phase.cpu);
    check_matched(report, "throughput phase", matched, phase.acked);
    Ok(())
}

async fn latency_phase(
    args: &PushArgs,
    pool: &Pool,
    devices: &Arc<Vec<Device>>,
    relay: &Relay,
    providers: &Providers,
    report: &mut Report,
) -> anyhow::Result<()> {
    let total = (args.rate as f64 * args.seconds).round() as usize;
    anyhow::ensure!(
        total > 0 && args.rate > 0,
        "--rate and --seconds must give at least one message"
    );
    let ledger = Arc::new(Ledger::new(total));
    let run = tidings_proto::random_bytes::<8>();
    let meter = CpuMeter::start(relay.pid());
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..total {
        let due = started + Duration::from_secs_f64(k as f64 / args.rate as f64);
        tokio::time::sleep_until(due).await;
        let mut mailbox = pool.mailbox(k);
        let request = store_request(devices, k as u64, &run, args.size);
        let ledger = Arc::clone(&ledger);
        tasks.spawn(async move {
            ledger.stamp(&ledger.sent[k]);
            match tokio::time::timeout(CALL_LIMIT, mailbox.store(request)).await {
                Ok(Ok(_)) => ledger.stamp(&ledger.acked[k]),
                Ok(Err(s)) => ledger.fail(s.to_string()),
                Err(_) => ledger.fail("Store timed out".into()),
            }
        });
    }
    let sending = started.elapsed();
    while tasks.join_next().await.is_some() {}
    report.metric(
        "latency_phase_rate",
        "latency phase: achieved Store rate",
        total as f64 / sending.as_secs_f64().max(1e-9),
        "/s",
        None,
    );
    let errors = ledger.errors.load(Ordering::Relaxed);
    report.check(
        "every Store acknowledged at the fixed rate",
        errors == 0,
        describe_failures(
            ledger.acked_count() as u64,
            errors,
            ledger.first_error().as_deref(),
        ),
    );
    let receipts = await_receipts(args, devices, &ledger, providers).await;
    let cpu = meter.stop();
    let matched = match_receipts(&receipts, devices, &ledger, &run, args.size);
    report.latency(
        "push_latency",
        &format!("at {}/s, Store ack → mock receipt", args.rate),
        matched.after_ack.summary(),
        Some(50.0),
    );
    report.latency(
        "push_latency_from_send",
        &format!("at {}/s, Store sent → mock receipt", args.rate),
        matched.from_send.summary(),
        None,
    );
    if matched.before_ack > 0 {
        report.note(format!(
            "{} pushes arrived before their Store's acknowledgement (counted as 0 ms)",
            matched.before_ack
        ));
    }
    report.cpu("push_latency", "latency phase", cpu);
    check_matched(report, "latency phase", &matched, ledger.acked_count());
    Ok(())
}

/// Waits until every acknowledged message of the ledger has been received by its
/// provider (or the drain timeout), and returns what the mocks received.
async fn await_receipts(
    args: &PushArgs,
    devices: &[Device],
    ledger: &Ledger,
    providers: &Providers,
) -> Vec<Receipt> {
    let mut wanted: HashMap<BenchService, usize> = HashMap::new();
    for (n, a) in ledger.acked.iter().enumerate() {
        if Ledger::micros(a).is_some() {
            *wanted.entry(devices[n % devices.len()].service).or_default() += 1;
        }
    }
    let n = |s: BenchService| wanted.get(&s).copied().unwrap_or(0);
    let limit = Duration::from_secs_f64(args.drain_timeout);
    // A timeout is reported as missing pushes by the caller.
    let webpush = async {
        if let Some(w) = &providers.webpush {
            let _ = w.wait_for(n(BenchService::Webpush), limit).await;
        }
    };
    let hms = async {
        if let Some(h) = &providers.hms {
            let _ = h.wait_for(n(BenchService::Hms), limit).await;
        }
    };
    let _ = tokio::join!(
        providers.apns.wait_for(n(BenchService::Apns), limit),
        providers.fcm.wait_for(n(BenchService::Fcm), limit),
        webpush,
        hms,
    );
    // Let stragglers (duplicates, if the relay sends any) arrive before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    collect_all(providers)
}

fn collect_all(providers: &Providers) -> Vec<Receipt> {
    let mut receipts: Vec<Receipt> = providers
        .apns
        .delivered()
        .into_iter()
        .map(|r| Receipt {
            enc: r.body.get("enc").and_then(|v| v.as_str()).map(str::to_owned),
            token: r.token,
            at: r.at,
        })
        .collect();
    receipts.extend(providers.fcm.delivered().into_iter().map(|r| Receipt {
        enc: r.data.get("enc").cloned(),
        token: r.token,
        at: r.at,
    }));
    if let Some(w) = &providers.webpush {
        receipts.extend(w.delivered().into_iter().map(|r| Receipt {
            enc: r.plaintext.and_then(|p| String::from_utf8(p).ok()),
            token: r.subscription,
            at: r.at,
        }));
    }
    if let Some(h) = &providers.hms {
        receipts.extend(h.delivered().into_iter().map(|r| Receipt {
            enc: r.data.get("enc").cloned(),
            token: r.token,
            at: r.at,
        }));
    }
    receipts
}

/// What Web Push's own encryption costs: RFC 8291 (an ECDH with a fresh P-256 key, two
/// HKDFs, AES-128-GCM) and the VAPID header, timed here with the relay's own code, times
/// the Web Push pushes of the phase, over the relay's CPU time in the phase.
fn webpush_share(report: &mut Report, devices: &[Device], matched: &Matched, span_s: f64, relay_cores: f64) {
    let Some(sub) = devices.iter().find_map(|d| d.web_push.as_ref()) else {
        return;
    };
    const ROUNDS: u32 = 2_000;
    let payload = vec![b'A'; 512];
    let started = std::time::Instant::now();
    for _ in 0..ROUNDS {
        let body = tidings_tests::tidings_relay::push::webpush::ece::encrypt(
            &sub.subscriber.p256dh,
            &sub.subscriber.auth,
            &payload,
        );
        std::hint::black_box(body.ok());
    }
    let per_push_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    report.metric(
        "webpush_encrypt_us",
        "Web Push RFC 8291 encryption per push (relay code, this process)",
        per_push_us,
        "µs",
        None,
    );
    let share = devices
        .iter()
        .filter(|d| d.service == BenchService::Webpush)
        .count() as f64
        / devices.len() as f64;
    let webpush_per_s = matched.delivered as f64 * share / span_s.max(1e-9);
    let relay_cpu_per_s = relay_cores.max(1e-9);
    report.metric(
        "webpush_crypto_share_of_relay_cpu",
        "throughput phase: RFC 8291 encryption's share of the relay's CPU",
        100.0 * webpush_per_s * per_push_us / 1e6 / relay_cpu_per_s,
        "%",
        None,
    );
}

/// Decrypts every receipt with its device's push key and matches it to its message.
fn match_receipts(
    receipts: &[Receipt],
    devices: &[Device],
    ledger: &Ledger,
    run: &[u8; 8],
    size: usize,
) -> Matched {
    let by_token: HashMap<&str, &Device> = devices.iter().map(|d| (d.token.as_str(), d)).collect();
    let mut by_hash: HashMap<[u8; 32], usize> = HashMap::new();
    for (n, a) in ledger.acked.iter().enumerate() {
        if Ledger::micros(a).is_some() {
            let d = &devices[n % devices.len()];
            let data = data_for(n as u64, run, size);
            by_hash.insert(tidings_proto::hash::message_hash(&d.account, 0, &data), n);
        }
    }
    let mut m = Matched::default();
    let mut seen = HashSet::new();
    for r in receipts {
        let Some(n) = identify(r, &by_token, &by_hash) else {
            m.strays += 1;
            continue;
        };
        if !seen.insert(n) {
            m.duplicates += 1;
            continue;
        }
        m.delivered += 1;
        let at_us = r.at.duration_since(ledger.base).unwrap_or_default().as_micros() as u64;
        m.last_us = m.last_us.max(at_us);
        let (Some(sent), Some(acked)) = (Ledger::micros(&ledger.sent[n]), Ledger::micros(&ledger.acked[n]))
        else {
            continue;
        };
        if at_us < acked {
            m.before_ack += 1;
        }
        m.after_ack
            .push(Duration::from_micros(at_us.saturating_sub(acked)));
        m.from_send
            .push(Duration::from_micros(at_us.saturating_sub(sent)));
    }
    m
}

/// The message number a receipt announces, if it decrypts and names one of the phase.
fn identify(
    r: &Receipt,
    by_token: &HashMap<&str, &Device>,
    by_hash: &HashMap<[u8; 32], usize>,
) -> Option<usize> {
    let device = by_token.get(r.token.as_str())?;
    let note = tidings_proto::push::decrypt_push(&device.push_key, r.enc.as_deref()?).ok()?;
    if note.account != device.account {
        return None;
    }
    let hash: [u8; 32] = note.hash.as_slice().try_into().ok()?;
    by_hash.get(&hash).copied()
}

pub(super) fn check_matched(report: &mut Report, phase: &str, m: &Matched, acked: usize) {
    let missing = acked.saturating_sub(m.delivered);
    report.check(
        &format!("{phase}: every acknowledged Store pushed exactly once"),
        missing == 0 && m.duplicates == 0 && m.strays == 0,
        format!(
            "{} of {acked} pushed; {missing} missing, {} duplicates, {} unmatched receipts",
            m.delivered, m.duplicates, m.strays
        ),
    );
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// TOML basic strings escape `\\` and `"` like JSON strings do.
    fn parse_toml_path(s: &str) -> PathBuf {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        PathBuf::from(v.as_str().unwrap())
    }

    #[test]
    fn proc_stat_lines_give_name_and_ticks() {
        let line = "4242 (tokio-runtime-w) S 1 2 3 4 5 6 7 8 9 10 1234 567 0 0 20 0 3 0 99";
        assert_eq!(stat_ticks(line), Some(("tokio-runtime-w".into(), 1234, 567)));
        let spaced = "7 (a b) c) R 1 2 3 4 5 6 7 8 9 10 11 12 0";
        assert_eq!(stat_ticks(spaced), Some(("a b) c".into(), 11, 12)));
        let me = ThreadCpu::read(std::process::id()).unwrap();
        assert!(!me.threads.is_empty());
        let none = me.since(&me);
        assert_eq!((none.user, none.system), (0, 0));
    }

    #[test]
    fn thread_cpu_groups_by_name_and_counts_exited_threads() {
        let before = ThreadCpu {
            user: 100,
            system: 50,
            threads: HashMap::from([(1, ("w".into(), 60, 30)), (2, ("w".into(), 40, 20))]),
        };
        // Thread 2 exited (its time stays in the process's), thread 3 was born.
        let after = ThreadCpu {
            user: 300,
            system: 150,
            threads: HashMap::from([(1, ("w".into(), 160, 80)), (3, ("log".into(), 10, 10))]),
        };
        let by_name = after.since(&before).by_name();
        assert_eq!(
            by_name,
            vec![
                ("w".to_owned(), 1.0, 0.5),
                ("(threads that exited)".to_owned(), 0.9, 0.4),
                ("log".to_owned(), 0.1, 0.1),
            ]
        );
    }

    #[test]
    fn toml_paths_round_trip() {
        let p = Path::new("/tmp/a b/\"q\"/c.json");
        assert_eq!(parse_toml_path(&toml_path(p)), p);
    }

    #[test]
    fn receipts_match_their_messages_once() {
        let devices = make_devices(2);
        let ledger = Ledger::new(3);
        for n in 0..3 {
            ledger.stamp(&ledger.sent[n]);
            ledger.stamp(&ledger.acked[n]);
        }
        let run = [9; 8];
        let receipt = |n: u64| {
            let d = &devices[n as usize % 2];
            let data = data_for(n, &run, 32);
            let note = tidings_proto::v1::PushNotification {
                account: d.account.to_vec(),
                hash: tidings_proto::hash::message_hash(&d.account, 0, &data).to_vec(),
                ..Default::default()
            };
            Receipt {
                token: d.token.clone(),
                enc: Some(tidings_proto::push::encrypt_push(&d.push_key, &note)),
                at: SystemTime::now(),
            }
        };
        let mut wrong_key = receipt(1);
        wrong_key.token = devices[0].token.clone();
        let receipts = vec![receipt(0), receipt(1), receipt(1), wrong_key];
        let m = match_receipts(&receipts, &devices, &ledger, &run, 32);
        assert_eq!((m.delivered, m.duplicates, m.strays), (2, 1, 1));
        assert_eq!(m.after_ack.len(), 2);
    }
}
