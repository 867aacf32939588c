//! Latency samples and their summary, and CPU time of processes (who was the bottleneck).

use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency samples of one measurement.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<Duration>);

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Latencies {
    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentiles; `None` without samples.
    pub fn summary(&self) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let total: Duration = sorted.iter().sum();
        Some(Summary {
            count: sorted.len(),
            p50_ms: ms(percentile(&sorted, 50.0)),
            p90_ms: ms(percentile(&sorted, 90.0)),
            p99_ms: ms(percentile(&sorted, 99.0)),
            max_ms: ms(sorted[sorted.len() - 1]),
            mean_ms: ms(total) / sorted.len() as f64,
        })
    }
}

/// The nearest-rank percentile `q` (0..=100) of a non-empty sorted slice.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing paren are
    // plain: state is field 3, utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux userspace ABI.
    Some((utime + stime) / 100.0)
}

/// One `VmRSS:`-style line of `/proc/PID/status`, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The 1-minute load average, to tell readers whether the machine was busy.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How busy the relay and this process were during one phase.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CpuUse {
    /// Relay CPU time / wall time (1.0 = one core busy); `None` when the relay is not a
    /// child process.
    pub relay_cores: Option<f64>,
    /// The same for this process (clients, and the mock providers in `push`).
    pub bench_cores: Option<f64>,
}

/// Measures [`CpuUse`] from its creation to [`CpuMeter::stop`].
pub struct CpuMeter {
    relay_pid: Option<u32>,
    started: Instant,
    relay0: Option<f64>,
    bench0: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring; `relay_pid` is the relay process, if it is a separate one.
    pub fn start(relay_pid: Option<u32>) -> Self {
        Self {
            relay_pid,
            started: Instant::now(),
            relay0: relay_pid.and_then(cpu_seconds),
            bench0: cpu_seconds(std::process::id()),
        }
    }

    /// CPU use since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let share = |before: Option<f64>, now: Option<f64>| Some((now? - before?) / wall);
        CpuUse {
            relay_cores: share(self.relay0, self.relay_pid.and_then(cpu_seconds)),
            bench_cores: share(self.bench0, cpu_seconds(std::process::id())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 1e-9);
        assert!((s.p99_ms - 99.0).abs() < 1e-9);
        assert!((s.max_ms - 100.0).abs() < 1e-9);
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
        assert!(Latencies::default().summary().is_none());
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(proc_status_bytes(std::process::id(), "VmRSS:").unwrap() > 0);
    }
}
