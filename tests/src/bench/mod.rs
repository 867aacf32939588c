//! The `tidings-bench` load generator (issues 2, 3 and 6, "Benchmark"). Compiled into the
//! binary only: nothing here is part of the tests library.

pub mod capacity;
pub mod load;
pub mod mailbox;
pub mod ohttp;
pub mod pool;
pub mod profile;
pub mod push;
pub mod relay;
pub mod report;
pub mod restore;
pub mod scaleout;
pub mod soak;
pub mod stats;

use report::Report;

/// Bytes per megabyte in the report (decimal, the stricter reading of "300 MB").
pub const MB: f64 = 1_000_000.0;

/// The payload of message `n` of a run: `be64(n) ‖ run ‖ filler`, at least 16 bytes, so
/// every message of every run hashes differently.
pub fn data_for(n: u64, run: &[u8; 8], size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size.max(16));
    data.extend_from_slice(&n.to_be_bytes());
    data.extend_from_slice(run);
    data.resize(size.max(16), 0xa5);
    data
}

/// `N ok, M failed (first: …)`.
pub fn describe_failures(ok: u64, errors: u64, first: Option<&str>) -> String {
    match first {
        Some(e) => format!("{ok} ok, {errors} failed; first error: {e}"),
        None => format!("{ok} ok, {errors} failed"),
    }
}

/// Unix seconds now (the `ts` of signed requests).
pub fn unix_now() -> i64 {
    tidings_device_link::client::unix_now()
}

/// What the reader needs to judge the figures: cores, load, build profile.
pub fn environment_notes(report: &mut Report, load_before: Option<f64>) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = |l: Option<f64>| l.map_or("?".to_owned(), |l| format!("{l:.2}"));
    report.note(format!(
        "{cores} CPUs; 1-minute load average {} at start, {} at end (above ~0.5 means other work shared the machine)",
        load(load_before),
        load(stats::load_average())
    ));
    if cfg!(debug_assertions) {
        report.note("debug build of tidings-bench: figures are not representative (use --release)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_by_number_and_run() {
        let a = data_for(1, &[0; 8], 4);
        assert_eq!(a.len(), 16);
        assert_ne!(a, data_for(2, &[0; 8], 4));
        assert_ne!(a, data_for(1, &[1; 8], 4));
        assert_eq!(data_for(1, &[0; 8], 256).len(), 256);
    }
}
