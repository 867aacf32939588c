//! What a run found: metrics with their targets, printed as a table or as JSON.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use super::stats::{CpuUse, Summary};

/// A figure the issues set a goal for.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be below this.
    Below(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::Below(t) => value < t,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {} {unit}", number(t)),
            Target::Below(t) => format!("< {} {unit}", number(t)),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Machine name, e.g. `stores_per_s`.
    pub key: String,
    /// What a person reads.
    pub label: String,
    /// The figure.
    pub value: f64,
    /// Its unit (`/s`, `ms`, `MB`, …).
    pub unit: String,
    /// The goal, if any.
    pub target: Option<Target>,
    /// Whether the goal was reached.
    pub met: Option<bool>,
}

/// Something that must hold for the figures to mean anything (no errors, nothing lost).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
    /// Details (counts, first error).
    pub detail: String,
}

/// Everything one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `mailbox` or `push`.
    pub scenario: String,
    /// The parameters the run used.
    pub settings: Map<String, Value>,
    /// Measured figures, in the order they were taken.
    pub metrics: Vec<Metric>,
    /// Correctness checks.
    pub checks: Vec<Check>,
    /// Remarks: machine load, where the relay ran.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report of `scenario`.
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            settings: Map::new(),
            metrics: Vec::new(),
            checks: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Records a parameter.
    pub fn setting(&mut self, key: &str, value: impl Into<Value>) {
        self.settings.insert(key.to_owned(), value.into());
    }

    /// Records a figure.
    pub fn metric(&mut self, key: &str, label: &str, value: f64, unit: &str, target: Option<Target>) {
        self.metrics.push(Metric {
            key: key.to_owned(),
            label: label.to_owned(),
            value,
            unit: unit.to_owned(),
            target,
            met: target.map(|t| t.met(value)),
        });
    }

    /// Records p50, p99 and max of a latency summary as `KEY_p50_ms` etc.; the target
    /// applies to p99.
    pub fn latency(&mut self, key: &str, label: &str, summary: Option<Summary>, p99_target: Option<f64>) {
        let Some(s) = summary else {
            self.note(format!("{label}: no samples"));
            return;
        };
        self.metric(
            &format!("{key}_p50_ms"),
            &format!("{label} p50"),
            s.p50_ms,
            "ms",
            None,
        );
        self.metric(
            &format!("{key}_p99_ms"),
            &format!("{label} p99"),
            s.p99_ms,
            "ms",
            p99_target.map(Target::Below),
        );
        self.metric(
            &format!("{key}_max_ms"),
            &format!("{label} max"),
            s.max_ms,
            "ms",
            None,
        );
    }

    /// Records how busy the relay and the bench were during a phase.
    pub fn cpu(&mut self, key: &str, label: &str, cpu: CpuUse) {
        if let Some(r) = cpu.relay_cores {
            self.metric(
                &format!("{key}_relay_cpu_cores"),
                &format!("{label}: relay CPU"),
                r,
                "cores",
                None,
            );
        }
        if let Some(b) = cpu.bench_cores {
            self.metric(
                &format!("{key}_bench_cpu_cores"),
                &format!("{label}: bench CPU"),
                b,
                "cores",
                None,
            );
        }
    }

    /// Records a correctness check.
    pub fn check(&mut self, what: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            what: what.to_owned(),
            ok,
            detail: detail.into(),
        });
    }

    /// Adds a remark.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Whether every correctness check held (targets are reported, not enforced).
    pub fn all_checks_passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The JSON document `--json` prints.
    pub fn to_json(&self) -> String {
        // Serialising plain maps, strings and finite numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "tidings-bench {}  ({})", self.scenario, settings.join(" "));
        let width = self
            .metrics
            .iter()
            .map(|m| m.label.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let _ = writeln!(
            out,
            "{:<width$}  {:>14}  {:<16}  result",
            "metric", "value", "target"
        );
        let _ = writeln!(out, "{}", "-".repeat(width + 44));
        for m in &self.metrics {
            let value = format!("{} {}", number(m.value), m.unit);
            let target = m.target.map(|t| t.describe(&m.unit)).unwrap_or_default();
            let verdict = match m.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            let _ = writeln!(out, "{:<width$}  {value:>14}  {target:<16}  {verdict}", m.label);
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "checks:");
            for c in &self.checks {
                let mark = if c.ok { "ok  " } else { "FAIL" };
                let _ = writeln!(out, "  {mark} {}: {}", c.what, c.detail);
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

/// A figure with sensible precision: integers for large values, 2 decimals for small.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json_carry_targets_and_checks() {
        let mut r = Report::new("mailbox");
        r.setting("clients", 64);
        r.metric(
            "stores_per_s",
            "stores/s",
            12_345.0,
            "/s",
            Some(Target::AtLeast(10_000.0)),
        );
        r.metric("rss_mb", "relay RSS", 400.0, "MB", Some(Target::Below(300.0)));
        r.check("no store failed", true, "0 errors");
        let table = r.to_table();
        assert!(table.contains("12345 /s") && table.contains("met") && table.contains("MISSED"));
        let json: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["metrics"][0]["met"], Value::Bool(true));
        assert_eq!(json["metrics"][1]["target"]["below"], 300.0);
        assert!(r.all_checks_passed());
    }
}
