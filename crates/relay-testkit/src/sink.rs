//! Where a target puts accepted messages besides its in-memory list.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::TestkitError;
use crate::target::ReceivedMessage;

/// Receives every message the target accepts, before the target answers
/// `250`. An `Err` makes the target answer `451 4.3.0` instead, so a message
/// is only acknowledged once the sink holds it.
///
/// Called on a blocking thread: implementations may do file I/O.
pub trait MessageSink: Send + Sync + 'static {
    /// Stores one message; the `String` error is shown to the client.
    fn store(&self, message: &ReceivedMessage) -> Result<(), String>;
}

/// Writes each message as `DIR/<n>.eml` (the raw bytes exactly as received,
/// dot-unstuffed) and its envelope as `DIR/<n>.env` (`X-Envelope-From:`,
/// `X-Envelope-To:` … lines). Numbers continue after the highest number
/// already in the directory, so a restart never overwrites mail.
///
/// Both files are written to a temporary name, synced and renamed; the
/// `.env` file is in place before the `.eml` file appears.
#[derive(Debug)]
pub struct DirSink {
    dir: PathBuf,
    next: AtomicU64,
}

impl DirSink {
    /// Creates `dir` if needed and finds the next free number.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, TestkitError> {
        let dir = dir.into();
        let io_err = |source| TestkitError::Dir {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_err)?;
        let mut highest = 0u64;
        for entry in fs::read_dir(&dir).map_err(io_err)? {
            let name = entry.map_err(io_err)?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".eml")
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                highest = highest.max(n);
            }
        }
        Ok(DirSink {
            dir,
            next: AtomicU64::new(highest + 1),
        })
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a message and returns the path of its `.eml` file.
    pub fn write(&self, message: &ReceivedMessage) -> std::io::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let env_path = self.dir.join(format!("{n}.env"));
        let eml_path = self.dir.join(format!("{n}.eml"));
        write_atomically(&env_path, envelope_text(message).as_bytes())?;
        write_atomically(&eml_path, &message.data)?;
        Ok(eml_path)
    }
}

impl MessageSink for DirSink {
    fn store(&self, message: &ReceivedMessage) -> Result<(), String> {
        self.write(message)
            .map(|_| ())
            .map_err(|e| format!("cannot store message: {e}"))
    }
}

/// The sidecar text: one header-like line per envelope fact.
pub fn envelope_text(message: &ReceivedMessage) -> String {
    let mut text = format!("X-Envelope-From: <{}>\n", message.mail_from);
    if !message.mail_params.is_empty() {
        text.push_str(&format!("X-Envelope-Params: {}\n", message.mail_params));
    }
    for rcpt in &message.rcpt_to {
        text.push_str(&format!("X-Envelope-To: <{rcpt}>\n"));
    }
    text.push_str(&format!("X-Helo: {}\n", message.helo));
    text.push_str(&format!("X-Peer: {}\n", message.peer));
    text.push_str(&format!(
        "X-Tls: {}\n",
        if message.tls { "yes" } else { "no" }
    ));
    text
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn message(from: &str) -> ReceivedMessage {
        ReceivedMessage {
            seq: 1,
            helo: "client.test".into(),
            mail_from: from.into(),
            mail_params: "BODY=8BITMIME".into(),
            rcpt_to: vec!["a@example.test".into(), "b@example.test".into()],
            data: Bytes::from_static(b"Subject: x\r\n\r\nhi\r\n"),
            tls: false,
            peer: "127.0.0.1:4000".parse().expect("addr"),
            mail_at: std::time::Instant::now(),
            received_at: std::time::Instant::now(),
        }
    }

    #[test]
    fn dir_sink_writes_eml_and_envelope_and_continues_numbering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = DirSink::open(dir.path()).expect("open");
        let first = sink.write(&message("s@sender.test")).expect("write");
        assert_eq!(first, dir.path().join("1.eml"));
        assert_eq!(
            fs::read(&first).expect("eml"),
            b"Subject: x\r\n\r\nhi\r\n".to_vec()
        );
        let env = fs::read_to_string(dir.path().join("1.env")).expect("env");
        assert!(env.contains("X-Envelope-From: <s@sender.test>\n"));
        assert!(env.contains("X-Envelope-To: <a@example.test>\nX-Envelope-To: <b@example.test>\n"));

        // A second sink on the same directory (a restart) continues at 2.
        let again = DirSink::open(dir.path()).expect("reopen");
        let second = again.write(&message("")).expect("write");
        assert_eq!(second, dir.path().join("2.eml"));
        let env = fs::read_to_string(dir.path().join("2.env")).expect("env");
        assert!(env.starts_with("X-Envelope-From: <>\n"));
        assert!(!dir.path().join("2.tmp").exists());
    }
}
