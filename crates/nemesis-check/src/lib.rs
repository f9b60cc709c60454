//! The nemesis's independent checker.
//!
//! Owns: judging a nemesis run from its files alone: what each sender was
//! told (250 / refused / cut), what the target stored, which faults ran
//! when, and what the harness observed after the last heal. Every message
//! is classified (ok, acked-but-lost, duplicated, unexpected,
//! unacked-but-delivered), duplicates are compared with the relay's own
//! count, and the post-heal state is checked (drained, equal replicas, no
//! bodies, log purged).
//!
//! Must never: depend on any relay crate or share code with the relay (a
//! bug there could hide itself in its own judge), talk to a node, or
//! assume anything about how the relay works beyond SMTP (RFC 5321 lets a
//! relay prepend `Received:` fields, nothing more).
//!
//! # Layout
//! - [`records`] — the run's files and their formats.
//! - [`classify`] — the per-message verdict.
//! - [`after_heal`] — the post-heal conditions.
//! - this file — [`Report`]: the one-line summary and the per-class table.

pub mod after_heal;
pub mod classify;
pub mod records;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use classify::{Kind, Verdict};
use records::{AfterHeal, FaultSpan, RunInfo, Sent, Stored};

/// How long after a heal a message still counts as "during" that fault: a
/// takeover or a retry happens seconds after the cause.
pub const AFTERMATH_MS: u64 = 15_000;

/// A whole run judged.
#[derive(Debug)]
pub struct Report {
    /// Seed and classes.
    pub run: RunInfo,
    /// The faults as they ran.
    pub faults: Vec<FaultSpan>,
    /// The per-message figures.
    pub verdict: Verdict,
    /// Duplicates the relay counted itself.
    pub counted_duplicates: u64,
    /// Failed post-heal conditions.
    pub after_heal: Vec<String>,
    /// Duplicated messages whose queue id (from the sender's `250 … queued
    /// as ID`) the relay never flagged: duplicates it did not count.
    pub uncounted: Vec<String>,
    /// Messages the relay flagged that arrived once: a possible duplicate
    /// (the reply to the final dot was lost) that was not one.
    pub counted_not_duplicated: usize,
}

impl Report {
    /// Reads and judges the run in `dir`.
    pub fn from_dir(dir: &Path) -> Result<Report, records::ReadError> {
        let run: RunInfo = records::read_json(&dir.join("run.json"))?;
        let sent: Vec<Sent> = records::read_lines(&dir.join("sent.jsonl"))?;
        let stored: Vec<Stored> = records::read_lines(&dir.join("stored.jsonl"))?;
        let faults: Vec<FaultSpan> = records::read_lines(&dir.join("faults.jsonl"))?;
        let after = match records::read_json::<AfterHeal>(&dir.join("after_heal.json")) {
            Ok(a) => a,
            Err(e) => AfterHeal {
                problems: vec![format!("no post-heal observation: {e}")],
                ..AfterHeal::default()
            },
        };
        let verdict = classify::classify(&sent, &stored);
        let flagged: std::collections::BTreeSet<&str> =
            after.counted_ids.iter().map(String::as_str).collect();
        let queue_id = |marker: &str| {
            sent.iter()
                .find(|s| s.marker == marker)
                .and_then(|s| s.reply.rsplit_once("queued as "))
                .map(|(_, id)| id.trim().to_string())
        };
        let mut uncounted: Vec<String> = verdict
            .findings
            .iter()
            .filter(|f| f.kind == Kind::Duplicated)
            .filter(|f| queue_id(&f.marker).is_none_or(|id| !flagged.contains(id.as_str())))
            .map(|f| f.marker.clone())
            .collect();
        uncounted.dedup();
        let duplicated_ids: std::collections::BTreeSet<String> = verdict
            .findings
            .iter()
            .filter(|f| f.kind == Kind::Duplicated)
            .filter_map(|f| queue_id(&f.marker))
            .collect();
        let counted_not_duplicated = flagged
            .iter()
            .filter(|id| !duplicated_ids.contains(**id))
            .count();
        Ok(Report {
            run,
            faults,
            verdict,
            counted_duplicates: after.counted_duplicates,
            after_heal: after_heal::problems(&after),
            uncounted,
            counted_not_duplicated,
        })
    }

    /// Whether the run found nothing wrong: nothing acknowledged lost,
    /// nothing unexpected, every duplicated message flagged by the relay
    /// itself and its counter at least the number of extra copies, and a
    /// clean state after the heal. (The relay may count more: a delivery
    /// after a lost reply to the final dot is a *possible* duplicate; no
    /// sender can know whether the target kept that copy.)
    pub fn passed(&self) -> bool {
        self.verdict.lost == 0
            && self.verdict.unexpected == 0
            && self.uncounted.is_empty()
            && self.verdict.duplicated as u64 <= self.counted_duplicates
            && self.after_heal.is_empty()
    }

    /// Whether mail was lost or invented, or the tier did not settle
    /// cleanly: failures of the relay's core promises. A run that fails
    /// only on duplicate counting is not one (see `scripts/nemesis.sh`,
    /// exit status 3).
    pub fn hard_failure(&self) -> bool {
        self.verdict.lost > 0 || self.verdict.unexpected > 0 || !self.after_heal.is_empty()
    }

    /// The one summary line `scripts/nemesis.sh` ends with.
    pub fn summary_line(&self) -> String {
        format!(
            "nemesis: seed={} classes={} faults={} acked={} lost={} duplicated={} \
             counted_duplicates={} unexpected={}",
            self.run.seed,
            self.run.classes.join(","),
            self.faults.len(),
            self.verdict.acked,
            self.verdict.lost,
            self.verdict.duplicated,
            self.counted_duplicates,
            self.verdict.unexpected
        )
    }

    /// Per fault class: how many faults, how many acknowledged messages
    /// were sent while one was active (or within [`AFTERMATH_MS`] of its
    /// heal), and the findings among those. `none` collects findings
    /// outside every fault window.
    pub fn class_rows(&self, sent: &[Sent]) -> Vec<ClassRow> {
        let mut rows: BTreeMap<String, ClassRow> = BTreeMap::new();
        for f in &self.faults {
            let row = rows.entry(f.class.clone()).or_insert_with(|| ClassRow {
                class: f.class.clone(),
                ..ClassRow::default()
            });
            row.faults += 1;
            row.errors += usize::from(f.error.is_some());
        }
        let classes_at = |(start, end): (u64, u64)| -> Vec<String> {
            let mut out: Vec<String> = self
                .faults
                .iter()
                .filter(|f| start <= f.end_ms + AFTERMATH_MS && end >= f.start_ms)
                .map(|f| f.class.clone())
                .collect();
            out.sort();
            out.dedup();
            if out.is_empty() {
                out.push("none".into());
            }
            out
        };
        for s in sent.iter().filter(|s| s.outcome == records::Outcome::Acked) {
            for class in classes_at((s.start_ms, s.end_ms)) {
                rows.entry(class.clone())
                    .or_insert_with(|| ClassRow {
                        class,
                        ..ClassRow::default()
                    })
                    .acked += 1;
            }
        }
        for finding in &self.verdict.findings {
            let classes = finding
                .window
                .map_or_else(|| vec!["none".to_string()], classes_at);
            for class in classes {
                let row = rows.entry(class.clone()).or_insert_with(|| ClassRow {
                    class,
                    ..ClassRow::default()
                });
                match finding.kind {
                    Kind::Lost => row.lost += 1,
                    Kind::Duplicated => row.duplicated += 1,
                    Kind::Unexpected => row.unexpected += 1,
                    Kind::UnackedDelivered => row.unacked_delivered += 1,
                }
            }
        }
        rows.into_values().collect()
    }

    /// The results file: summary, per-class table, findings, post-heal
    /// problems (Markdown).
    pub fn results_markdown(&self, sent: &[Sent]) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let _ = writeln!(out, "# nemesis run, seed {}\n", self.run.seed);
        let _ = writeln!(out, "`{}`\n", self.summary_line());
        if !self.run.switches.is_empty() {
            let _ = writeln!(
                out,
                "TEST-ONLY switches on (a run meant to fail): {}\n",
                self.run.switches.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "verdict: {}; acked {}, ok {}, refused {}, cut {}, unacked-but-delivered {}\n",
            if self.passed() { "PASS" } else { "FAIL" },
            v.acked,
            v.ok,
            v.refused,
            v.cut,
            v.unacked_delivered
        );
        let _ = writeln!(
            out,
            "duplicates: {} extra copies; the relay counted {} (metric) and flagged {} message(s) \
             that arrived once (possible duplicates after a lost final reply); \
             duplicated messages it never flagged: {}{}\n",
            v.duplicated,
            self.counted_duplicates,
            self.counted_not_duplicated,
            self.uncounted.len(),
            if self.uncounted.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.uncounted
                        .iter()
                        .take(20)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let _ = writeln!(
            out,
            "| class | faults | fault errors | acked during | lost | duplicated | unexpected | unacked-but-delivered |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for r in self.class_rows(sent) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.class,
                r.faults,
                r.errors,
                r.acked,
                r.lost,
                r.duplicated,
                r.unexpected,
                r.unacked_delivered
            );
        }
        let _ = writeln!(out, "\n## After the heal\n");
        if self.after_heal.is_empty() {
            let _ = writeln!(out, "drained, replicas equal, no bodies left, logs purged");
        }
        for p in &self.after_heal {
            let _ = writeln!(out, "- {p}");
        }
        let _ = writeln!(out, "\n## Faults\n");
        for f in &self.faults {
            let _ = writeln!(
                out,
                "- {:>7.1}s–{:>7.1}s {}: {}{}",
                f.start_ms as f64 / 1000.0,
                f.end_ms as f64 / 1000.0,
                f.class,
                f.name,
                f.error
                    .as_ref()
                    .map(|e| format!(" (error: {e})"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "\n## Findings (first 200)\n");
        for f in v.findings.iter().take(200) {
            let _ = writeln!(
                out,
                "- {:?} {} {}",
                f.kind,
                f.marker,
                f.window
                    .map(|(s, e)| format!(
                        "sent {:.1}s–{:.1}s",
                        s as f64 / 1000.0,
                        e as f64 / 1000.0
                    ))
                    .unwrap_or_default()
            );
        }
        out
    }
}

/// One row of the per-class table.
#[derive(Clone, Debug, Default)]
pub struct ClassRow {
    /// The fault class, or `none`.
    pub class: String,
    /// Faults of this class injected.
    pub faults: usize,
    /// Of which injecting or healing reported an error.
    pub errors: usize,
    /// Acknowledged messages sent during one of them.
    pub acked: usize,
    /// Findings in those windows.
    pub lost: usize,
    /// See `lost`.
    pub duplicated: usize,
    /// See `lost`.
    pub unexpected: usize,
    /// See `lost`.
    pub unacked_delivered: usize,
}
