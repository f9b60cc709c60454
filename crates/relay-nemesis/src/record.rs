//! Writing the run's files (formats in `nemesis_check::records`): one JSON
//! object per line, flushed per line so a killed harness leaves what it saw.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nemesis_check::records::Stored;
use relay_testkit::{MessageSink, ReceivedMessage};

/// A JSON-lines file shared by tasks.
#[derive(Clone, Debug)]
pub struct Jsonl(Arc<Mutex<BufWriter<File>>>);

impl Jsonl {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> std::io::Result<Jsonl> {
        Ok(Jsonl(Arc::new(Mutex::new(BufWriter::new(File::create(
            path,
        )?)))))
    }

    /// Appends one record and flushes it to the kernel.
    pub fn write<T: serde::Serialize>(&self, value: &T) -> std::io::Result<()> {
        let line = serde_json::to_string(value).map_err(std::io::Error::other)?;
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        w.flush()
    }
}

/// The target's record of what it stored: each message goes to
/// `stored.jsonl` before the target answers (so a stored message is
/// recorded even if the reply is then dropped).
#[derive(Debug)]
pub struct StoredSink(pub Jsonl);

impl MessageSink for StoredSink {
    fn store(&self, message: &ReceivedMessage) -> Result<(), String> {
        self.0
            .write(&Stored {
                seq: message.seq,
                helo: message.helo.clone(),
                data_hex: hex::encode(&message.data),
            })
            .map_err(|e| format!("cannot record the message: {e}"))
    }
}
