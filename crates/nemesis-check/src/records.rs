//! The files a nemesis run leaves behind, as the checker reads them. One JSON
//! object per line, so a run that dies half-way still leaves readable files.
//!
//! | file | who writes it | one line per |
//! |---|---|---|
//! | `sent.jsonl` | the load senders | transaction, once its outcome is known |
//! | `stored.jsonl` | the recording target | message the target stored |
//! | `faults.jsonl` | the schedule runner | fault, once healed |
//! | `after_heal.json` | the harness, after the last heal | (one object) |
//! | `run.json` | the harness, at start | (one object: seed, classes) |

use std::io::BufRead;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a sender was told about one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `250` to the final dot: the relay took responsibility.
    Acked,
    /// Any other reply (4xx/5xx) at any step: not accepted.
    Refused,
    /// The connection broke or timed out before a reply to the final dot:
    /// the sender cannot know.
    Cut,
}

/// One transaction as its sender saw it (`sent.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sent {
    /// The unique marker, also the message's `Subject`.
    pub marker: String,
    /// The node the sender talked to.
    pub node: u64,
    /// What the sender was told.
    pub outcome: Outcome,
    /// The reply line that decided it, or the error for a cut.
    pub reply: String,
    /// SHA-256 (hex) of the message as given to `DATA`, before dot-stuffing.
    pub sha256: String,
    /// Milliseconds since the run started: transaction start and end.
    pub start_ms: u64,
    /// See `start_ms`.
    pub end_ms: u64,
}

/// One message the target stored (`stored.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    /// Order of storing at the target.
    pub seq: u64,
    /// The EHLO name of the delivering relay.
    pub helo: String,
    /// The message exactly as stored (dot-unstuffed), in hex.
    pub data_hex: String,
}

/// One fault of the schedule (`faults.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultSpan {
    /// Its class (`process`, `network`, …).
    pub class: String,
    /// What exactly was done, e.g. `kill -9 node 2`.
    pub name: String,
    /// Milliseconds since the run started: injected and healed.
    pub start_ms: u64,
    /// See `start_ms`.
    pub end_ms: u64,
    /// Whether injecting or healing reported an error (the text).
    #[serde(default)]
    pub error: Option<String>,
}

/// One node as observed after the last heal (part of `after_heal.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeEnd {
    /// Node id.
    pub id: u64,
    /// Messages queued, deferred and held in its replica.
    pub queued: u64,
    /// See `queued`.
    pub deferred: u64,
    /// See `queued`.
    pub held: u64,
    /// Message bodies still stored in its replica.
    pub stored_bodies: u64,
    /// The applied index its state checksum belongs to.
    pub digest_index: u64,
    /// Its state checksum at `digest_index`.
    pub state_checksum: String,
    /// Highest log index purged from its Raft log.
    pub purged_index: u64,
}

/// What the harness saw after healing everything (`after_heal.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AfterHeal {
    /// Whether the queue drained on every node within the harness's deadline.
    pub drained: bool,
    /// The highest applied index when it drained: every entry carrying a
    /// body is at or below it, so each log must be purged at least this far.
    pub drained_index: u64,
    /// Each node, observed once the harness stopped waiting.
    pub nodes: Vec<NodeEnd>,
    /// `relay_duplicate_deliveries_total` summed over reasons, nodes and
    /// process lifetimes (the harness reads it before every kill).
    pub counted_duplicates: u64,
    /// Queue ids of the messages the relay itself flagged as (possibly)
    /// delivered twice, as its nodes logged them (`duplicate=true`).
    #[serde(default)]
    pub counted_ids: Vec<String>,
    /// Anything the harness could not observe, in words.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// The run's parameters (`run.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunInfo {
    /// The schedule's seed.
    pub seed: u64,
    /// Fault classes in the schedule.
    pub classes: Vec<String>,
    /// Planned length of the fault phase, seconds.
    pub seconds: u64,
    /// Test-only switches the nodes ran with (empty for a real run).
    #[serde(default)]
    pub switches: Vec<String>,
}

/// Reading a run's files failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not the expected JSON.
    #[error("{path}:{line}: {message}")]
    Json {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
}

/// Every line of a JSON-lines file; a missing file is empty. A torn last
/// line (the writer was stopped mid-write) is ignored.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, ReadError> {
    let shown = path.display().to_string();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ReadError::Io {
                path: shown,
                source,
            });
        }
    };
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| ReadError::Io {
            path: shown.clone(),
            source,
        })?;
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(_) if i + 1 == lines.len() && !line.ends_with('}') => {}
            Err(e) => {
                return Err(ReadError::Json {
                    path: shown,
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The one object in a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ReadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: shown.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ReadError::Json {
        path: shown,
        line: e.line(),
        message: e.to_string(),
    })
}
