//! `nemesis-check DIR`: judges the nemesis run in DIR, writes
//! `DIR/results.md`, prints the summary line last, and exits 0 only if the
//! run passed (nothing lost or unexpected, every duplicate counted, a clean
//! state after the heal); 1 if mail was lost or invented or the state
//! after the heal is wrong; 3 if only duplicate counting failed (a
//! duplicated message the relay did not flag, or a counter below the
//! extra copies); 2 if the files cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use nemesis_check::Report;
use nemesis_check::records::{self, Sent};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: nemesis-check DIR");
        return ExitCode::from(2);
    };
    match run(&dir) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nemesis-check: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(dir: &std::path::Path) -> anyhow::Result<u8> {
    let report = Report::from_dir(dir)?;
    let sent: Vec<Sent> = records::read_lines(&dir.join("sent.jsonl"))?;
    let results = dir.join("results.md");
    std::fs::write(&results, report.results_markdown(&sent))?;
    for p in &report.after_heal {
        println!("after heal: {p}");
    }
    if !report.uncounted.is_empty() {
        println!(
            "duplicated but never flagged by the relay: {}",
            report.uncounted.len()
        );
    }
    println!("results: {}", results.display());
    println!("{}", report.summary_line());
    Ok(if report.passed() {
        0
    } else if report.hard_failure() {
        1
    } else {
        3
    })
}
