//! phlem's results: per step latency percentiles, failures by reason,
//! retransmits, throughput. The JSON form keeps every sample, so reports
//! from shards merge into exact percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub transfers: u64,
    pub failures: u64,
    pub bytes: u64,
    pub retransmits: u64,
    /// Latency of each successful transfer, microseconds.
    pub samples_us: Vec<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    pub phones: u64,
    pub elapsed_s: f64,
    /// "family pattern" → stats.
    pub steps: BTreeMap<String, StepStats>,
    /// reason → count.
    pub failures: BTreeMap<String, u64>,
    /// Files a phone asks for and may lack (CTL/ITL), answered "not found".
    pub expected_missing: u64,
    /// Registrations and NOTIFYs, with `--sip-proxy`.
    #[serde(default)]
    pub sip: super::sip_phone::SipStats,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e3
}

impl Report {
    pub fn record_ok(&mut self, step: &str, latency: Duration, bytes: usize, retransmits: u32) {
        let s = self.steps.entry(step.to_string()).or_default();
        s.transfers += 1;
        s.bytes += bytes as u64;
        s.retransmits += retransmits as u64;
        s.samples_us.push(latency.as_micros() as u64);
    }

    pub fn record_failure(&mut self, step: &str, reason: &str) {
        let s = self.steps.entry(step.to_string()).or_default();
        s.transfers += 1;
        s.failures += 1;
        *self.failures.entry(reason.to_string()).or_default() += 1;
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn transfers(&self) -> u64 {
        self.steps.values().map(|s| s.transfers - s.failures).sum()
    }

    /// Combines shard reports: counts add up, samples pool, and the
    /// elapsed time is the longest shard's (they run side by side).
    pub fn merge(reports: Vec<Report>) -> Report {
        let mut merged = Report::default();
        for r in reports {
            if merged.target.is_empty() {
                merged.target = r.target.clone();
            }
            merged.phones += r.phones;
            merged.elapsed_s = merged.elapsed_s.max(r.elapsed_s);
            merged.expected_missing += r.expected_missing;
            merged.sip.merge(r.sip);
            for (reason, n) in r.failures {
                *merged.failures.entry(reason).or_default() += n;
            }
            for (step, s) in r.steps {
                let m = merged.steps.entry(step).or_default();
                m.transfers += s.transfers;
                m.failures += s.failures;
                m.bytes += s.bytes;
                m.retransmits += s.retransmits;
                m.samples_us.extend(s.samples_us);
            }
        }
        merged
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<34} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}\n",
            "step", "ok", "fail", "p50 ms", "p90 ms", "p99 ms", "max ms", "retrans"
        ));
        let mut bytes = 0;
        let mut retransmits = 0;
        for (name, s) in &self.steps {
            let mut sorted = s.samples_us.clone();
            sorted.sort_unstable();
            out.push_str(&format!(
                "{:<34} {:>7} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}\n",
                name,
                s.transfers - s.failures,
                s.failures,
                percentile(&sorted, 0.5),
                percentile(&sorted, 0.9),
                percentile(&sorted, 0.99),
                percentile(&sorted, 1.0),
                s.retransmits
            ));
            bytes += s.bytes;
            retransmits += s.retransmits;
        }
        let rate = self.transfers() as f64 / self.elapsed_s.max(1e-9);
        out.push_str(&format!(
            "{} phones, {} transfers ({:.0}/s), {} bytes, {} retransmits, {} failures, {} expected-missing files, {:.2} s\n",
            self.phones,
            self.transfers(),
            rate,
            bytes,
            retransmits,
            self.failed(),
            self.expected_missing,
            self.elapsed_s
        ));
        for (reason, n) in &self.failures {
            out.push_str(&format!("  failed: {reason} x{n}\n"));
        }
        let sip = &self.sip;
        if sip.registered + sip.notifies > 0 {
            out.push_str(&format!(
                "sip: {} registered, {} NOTIFYs ({} answered 200, {} bad event, {} retransmitted), {} re-fetches\n",
                sip.registered,
                sip.notifies,
                sip.answered,
                sip.bad_events,
                sip.retransmissions,
                sip.refetches.len()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_exact_percentiles() {
        let mut a = Report {
            phones: 2,
            elapsed_s: 1.0,
            ..Default::default()
        };
        let mut b = Report {
            phones: 1,
            elapsed_s: 2.0,
            ..Default::default()
        };
        for ms in [1, 2] {
            a.record_ok("yealink {mac}.cfg", Duration::from_millis(ms), 100, 0);
        }
        b.record_ok("yealink {mac}.cfg", Duration::from_millis(30), 100, 1);
        b.record_failure("yealink {mac}.cfg", "timeout");
        let m = Report::merge(vec![a, b]);
        assert_eq!(
            (m.phones, m.elapsed_s, m.transfers(), m.failed()),
            (3, 2.0, 3, 1)
        );
        let s = &m.steps["yealink {mac}.cfg"];
        assert_eq!(
            (s.transfers, s.bytes, s.retransmits, s.samples_us.len()),
            (4, 300, 1, 3)
        );
        assert!(m.table().contains("failed: timeout x1"));
    }
}
