//! The snapshot file: its format, a streaming writer, a streaming reader
//! that verifies or loads it, and [`SnapshotFile`], openraft's snapshot data.
//!
//! Format 2 (every integer big-endian):
//!
//! ```text
//! magic    8 bytes  "QRSNAP\r\n"
//! format   u32      2
//! head     u32 length + relay_types::encode(Head { last_applied, last_membership })
//! records  repeated:
//!   table  u8 1, u8 name length, column family name (UTF-8)
//!   row    u8 2, u32 key length, key, u32 value length, value
//!   end    u8 3, u64 number of rows
//! trailer  32 bytes: SHA-256 of every byte before it
//! ```
//!
//! Rows follow the table record they belong to; each state column family
//! appears at most once. Reading never allocates by a length it has not
//! verified: the verify pass hashes rows through a fixed buffer, and a length
//! that runs past the checksum is reported as truncation.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use openraft::{BasicNode, LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::db::STATE_CFS;
use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"QRSNAP\r\n";
/// Bumped when the file layout or the state column families change.
pub(crate) const FORMAT: u32 = 2;
const TAG_TABLE: u8 = 1;
const TAG_ROW: u8 = 2;
const TAG_END: u8 = 3;
const TRAILER: u64 = 32;
/// The head is a log id and a membership: small.
const MAX_HEAD: u32 = 1 << 20;
/// Read and write buffer size: the only per-snapshot memory besides one row.
pub(crate) const BUFFER: usize = 1 << 20;

/// What the snapshot is of, at the start of the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) last_membership: StoredMembership<u64, BasicNode>,
}

/// A file's path and an I/O error as a `StoreError`.
pub(crate) fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::SnapshotIo { path, op, source }
}

fn invalid(path: &Path, problem: String) -> StoreError {
    StoreError::SnapshotFile {
        path: path.to_path_buf(),
        problem,
    }
}

/// Writes a snapshot file row by row through a hash.
pub(crate) struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    hasher: Sha256,
    rows: u64,
    bytes: u64,
}

impl Writer {
    /// Starts the file with the magic, format and head.
    pub(crate) fn new(file: File, path: &Path, head: &Head) -> Result<Writer, StoreError> {
        let mut writer = Writer {
            out: BufWriter::with_capacity(BUFFER, file),
            path: path.to_path_buf(),
            hasher: Sha256::new(),
            rows: 0,
            bytes: 0,
        };
        let head = relay_types::encode(head);
        writer.put(MAGIC)?;
        writer.put(&FORMAT.to_be_bytes())?;
        writer.put(&len32(head.len(), &writer.path)?.to_be_bytes())?;
        writer.put(&head)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(io_error(&self.path, "write"))
    }

    /// Starts the rows of column family `cf`.
    pub(crate) fn table(&mut self, cf: &str) -> Result<(), StoreError> {
        let name = u8::try_from(cf.len()).expect("column family names are short");
        self.put(&[TAG_TABLE, name])?;
        self.put(cf.as_bytes())
    }

    /// One row of the current table.
    pub(crate) fn row(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put(&[TAG_ROW])?;
        self.put(&len32(key.len(), &self.path)?.to_be_bytes())?;
        self.put(key)?;
        self.put(&len32(value.len(), &self.path)?.to_be_bytes())?;
        self.put(value)?;
        self.rows += 1;
        Ok(())
    }

    /// Ends the file with the row count and the checksum, and syncs it to
    /// disk. Returns the file, its rows and its size.
    pub(crate) fn finish(mut self) -> Result<(File, u64, u64), StoreError> {
        self.put(&[TAG_END])?;
        self.put(&self.rows.to_be_bytes())?;
        let digest = self.hasher.finalize_reset();
        self.out
            .write_all(&digest)
            .map_err(io_error(&self.path, "write"))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_error(&self.path, "write")(e.into_error()))?;
        file.sync_all().map_err(io_error(&self.path, "fsync"))?;
        Ok((file, self.rows, self.bytes + TRAILER))
    }
}

fn len32(len: usize, path: &Path) -> Result<u32, StoreError> {
    u32::try_from(len).map_err(|_| invalid(path, format!("a row part of {len} bytes (over 4 GiB)")))
}

/// Called with (column family, key, value) for every row loaded.
pub(crate) type OnRow<'a> = &'a mut dyn FnMut(&'static str, &[u8], &[u8]) -> Result<(), StoreError>;

/// What a verified file holds.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) head: Head,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
}

/// Reads the whole file, checks its structure and its SHA-256 trailer, and
/// returns its head. Memory: one read buffer, whatever the file holds.
pub(crate) fn verify(file: &mut File, path: &Path) -> Result<Verified, StoreError> {
    Parser::new(file, path, true)?.run(None)
}

/// Reads a file [`verify`] accepted, calling `on_row(cf, key, value)` for
/// every row in file order. Memory: one read buffer plus the largest row.
pub(crate) fn load(
    file: &mut File,
    path: &Path,
    on_row: OnRow<'_>,
) -> Result<Verified, StoreError> {
    Parser::new(file, path, false)?.run(Some(on_row))
}

struct Parser<'a> {
    input: BufReader<&'a mut File>,
    path: &'a Path,
    /// Bytes read so far.
    pos: u64,
    /// Where the checksum starts.
    end: u64,
    hasher: Option<Sha256>,
    small: Vec<u8>,
}

impl<'a> Parser<'a> {
    fn new(file: &'a mut File, path: &'a Path, check: bool) -> Result<Parser<'a>, StoreError> {
        let len = file.metadata().map_err(io_error(path, "stat"))?.len();
        let min = (MAGIC.len() + 4 + 4 + 1 + 8) as u64 + TRAILER;
        if len < min {
            return Err(invalid(
                path,
                format!("truncated: {len} bytes, a snapshot has at least {min}"),
            ));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(io_error(path, "seek"))?;
        Ok(Parser {
            input: BufReader::with_capacity(BUFFER, file),
            path,
            pos: 0,
            end: len - TRAILER,
            hasher: check.then(Sha256::new),
            small: Vec::new(),
        })
    }

    fn need(&self, n: u64, what: &str) -> Result<(), StoreError> {
        let left = self.end - self.pos;
        if n > left {
            return Err(invalid(
                self.path,
                format!(
                    "truncated or corrupt: {what} at byte {} needs {n} bytes, only {left} are left before the checksum",
                    self.pos
                ),
            ));
        }
        Ok(())
    }

    /// Reads exactly `n` bytes into `buf` (replacing its contents).
    fn read_into(&mut self, n: usize, what: &str, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        self.need(n as u64, what)?;
        buf.clear();
        buf.resize(n, 0);
        self.input
            .read_exact(buf)
            .map_err(io_error(self.path, "read"))?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..]);
        }
        self.pos += n as u64;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], StoreError> {
        let mut small = std::mem::take(&mut self.small);
        let result = self.read_into(N, what, &mut small);
        let out = result.map(|()| small[..].try_into().expect("N bytes"));
        self.small = small;
        out
    }

    fn u8(&mut self, what: &str) -> Result<u8, StoreError> {
        Ok(self.bytes::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.bytes(what)?))
    }

    /// Hashes `n` bytes through the read buffer without keeping them.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), StoreError> {
        self.need(n, what)?;
        let mut left = n;
        while left > 0 {
            let buf = self.input.fill_buf().map_err(io_error(self.path, "read"))?;
            if buf.is_empty() {
                return Err(io_error(self.path, "read")(
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            let k = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(h) = &mut self.hasher {
                h.update(&buf[..k]);
            }
            self.input.consume(k);
            left -= k as u64;
        }
        self.pos += n;
        Ok(())
    }

    fn run(mut self, mut on_row: Option<OnRow<'_>>) -> Result<Verified, StoreError> {
        let magic: [u8; 8] = self.bytes("magic")?;
        if &magic != MAGIC {
            return Err(invalid(
                self.path,
                "not a quorum-relay snapshot file (bad magic)".into(),
            ));
        }
        let format = self.u32("format")?;
        if format != FORMAT {
            return Err(invalid(
                self.path,
                format!("format {format} (this build reads format {FORMAT})"),
            ));
        }
        let head_len = self.u32("head length")?;
        if head_len > MAX_HEAD {
            return Err(invalid(
                self.path,
                format!("head of {head_len} bytes (at most {MAX_HEAD})"),
            ));
        }
        let mut buf = Vec::new();
        self.read_into(head_len as usize, "head", &mut buf)?;
        let head: Head = relay_types::decode(&buf)
            .map_err(|e| invalid(self.path, format!("head does not decode: {e}")))?;

        let mut key = Vec::new();
        let mut value = Vec::new();
        let mut table: Option<&'static str> = None;
        let mut seen = [false; STATE_CFS.len()];
        let mut rows = 0u64;
        loop {
            let at = self.pos;
            match self.u8("record tag")? {
                TAG_TABLE => {
                    let n = self.u8("table name length")?;
                    self.read_into(n.into(), "table name", &mut buf)?;
                    let Some(i) = STATE_CFS.iter().position(|cf| cf.as_bytes() == &buf[..]) else {
                        return Err(invalid(
                            self.path,
                            format!(
                                "unknown table {:?} at byte {at}",
                                String::from_utf8_lossy(&buf)
                            ),
                        ));
                    };
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(invalid(
                            self.path,
                            format!("table {} twice (at byte {at})", STATE_CFS[i]),
                        ));
                    }
                    table = Some(STATE_CFS[i]);
                }
                TAG_ROW => {
                    let Some(cf) = table else {
                        return Err(invalid(
                            self.path,
                            format!("row before any table at byte {at}"),
                        ));
                    };
                    let key_len = self.u32("key length")?;
                    match on_row.as_mut() {
                        None => {
                            self.skip(key_len.into(), "key")?;
                            let value_len = self.u32("value length")?;
                            self.skip(value_len.into(), "value")?;
                        }
                        Some(on_row) => {
                            self.read_into(key_len as usize, "key", &mut key)?;
                            let value_len = self.u32("value length")?;
                            self.read_into(value_len as usize, "value", &mut value)?;
                            on_row(cf, &key, &value)?;
                        }
                    }
                    rows += 1;
                }
                TAG_END => {
                    let count = self.u64("row count")?;
                    if count != rows {
                        return Err(invalid(
                            self.path,
                            format!("end record says {count} rows, the file holds {rows}"),
                        ));
                    }
                    if self.pos != self.end {
                        return Err(invalid(
                            self.path,
                            format!(
                                "{} bytes after the end record (at byte {})",
                                self.end - self.pos,
                                self.pos
                            ),
                        ));
                    }
                    break;
                }
                tag => {
                    return Err(invalid(
                        self.path,
                        format!("unknown record tag {tag} at byte {at}"),
                    ));
                }
            }
        }
        if let Some(hasher) = self.hasher.take() {
            let mut trailer = [0u8; TRAILER as usize];
            self.input
                .read_exact(&mut trailer)
                .map_err(io_error(self.path, "read"))?;
            let actual = hasher.finalize();
            if actual[..] != trailer[..] {
                return Err(invalid(
                    self.path,
                    format!(
                        "checksum mismatch: the trailer says SHA-256 {}, the contents hash to {}",
                        hex::encode(trailer),
                        hex::encode(actual)
                    ),
                ));
            }
        }
        Ok(Verified {
            head,
            rows,
            bytes: self.end + TRAILER,
        })
    }
}

/// openraft's snapshot data: an open snapshot file.
///
/// [`get_current_snapshot`](openraft::storage::RaftStateMachine::get_current_snapshot)
/// hands out read handles on the current snapshot file;
/// [`begin_receiving_snapshot`](openraft::storage::RaftStateMachine::begin_receiving_snapshot)
/// a new temporary file that openraft fills chunk by chunk and that is
/// deleted if it is dropped before it was installed. Reads, writes and
/// seeks go to the file.
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    /// Deleted on drop (a receiving file not installed).
    temporary: bool,
}

impl SnapshotFile {
    pub(crate) fn new(file: tokio::fs::File, path: PathBuf, temporary: bool) -> SnapshotFile {
        SnapshotFile {
            file,
            path,
            temporary,
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes over the file: waits for writes in flight, and returns a
    /// blocking handle, the path and whether it is a temporary file, which
    /// the caller now deletes if needed.
    pub(crate) async fn take(mut self) -> io::Result<(File, PathBuf, bool)> {
        let std = self.file.try_clone().await?.into_std().await;
        let temporary = std::mem::replace(&mut self.temporary, false);
        Ok((std, std::mem::take(&mut self.path), temporary))
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.temporary {
            // A receiving file openraft abandoned (a newer snapshot, a failed
            // transfer). Stale files left by a crash are swept on open.
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot delete an abandoned snapshot file");
            }
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().file).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().file).poll_complete(cx)
    }
}
