//! Group commit on the leader: [`WriteBatcher`] packs the message commands
//! that arrive while a write is in flight into one `Command::Batch` entry,
//! so many concurrent submissions share one Raft append and one fsync per
//! node.
//!
//! Why here: openraft 0.9 appends (and fsyncs) every `client_write` on the
//! leader as its own entry, one at a time (see `relay_store::metrics`), so
//! without this the leader pays one fsync per message whatever the load.
//!
//! How: one task owns the writes. It takes the first waiting proposal, then
//! every proposal already queued behind it (up to [`MAX_BATCH_COMMANDS`]
//! commands and [`MAX_BATCH_BYTES`] of bodies), and commits them as one
//! entry. While that entry commits, new proposals queue up and ride in the
//! next one. Nothing ever waits for a batch to fill: under light load a
//! proposal is written alone at once, as before; under heavy load batches
//! grow by themselves to what arrived during one commit. One entry commits
//! at a time ([`WRITES_IN_FLIGHT`]): measured against two in flight, one
//! gave larger batches (5.4 instead of 3.8 accepted messages per leader
//! fsync at 1,000 msgs/s offered) and more throughput at 50 sessions.
//!
//! Only batchable commands (`Command::batchable`: enqueue, attempt,
//! delivered) come through here; operator and route commands are written
//! on their own. Each proposer gets its own command's result.
//!
//! During a leadership transfer the batcher holds its queue: proposals that
//! were already queued when the pause began would otherwise keep growing
//! the leader's log batch by batch, so the transfer's target (caught up a
//! moment before) trails again when it asks for votes, and the leader
//! refuses it by log length. The held proposals are written when the
//! pause ends (on a node that no longer leads, Raft answers
//! `ForwardToLeader` and the proposer forwards them).
//!
//! A write in flight is bounded: openraft 0.9 can leave a `client_write`
//! unanswered for good (a former leader whose uncommitted entry is dropped
//! when it catches up through a snapshot), and with one slot that would
//! hang every later write on this node once it leads again. After the
//! write timeout (the submit timeout plus [`STRANDED_MARGIN`]) its
//! proposers get [`BatchWriteError::Stranded`] ("outcome unknown": the
//! entry may still commit, which the state machine tolerates), the slot is
//! released, and `relay_cluster_stranded_writes_total` counts it (see
//! `docs/adr/005-stranded-client-writes.md`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use relay_types::{Command, CommandResult, MAX_BATCH_COMMANDS, NodeId};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Raft;

/// How much longer than the submit timeout a write may stay in flight
/// before it is given up as stranded (its proposers have long given up by
/// then: this only frees the slot).
pub const STRANDED_MARGIN: Duration = Duration::from_secs(5);

/// Most body bytes one batch entry carries (the proposal that crosses the
/// line still rides along, so one large message is never held back).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Proposals that may wait for the batcher before proposers wait for room.
const QUEUE_DEPTH: usize = 4 * MAX_BATCH_COMMANDS;

/// Batch entries committing at once (see the module doc for why one).
pub const WRITES_IN_FLIGHT: usize = 1;

/// Why a batched write was not committed.
#[derive(Debug, Clone)]
pub(crate) enum BatchWriteError {
    /// This node is not (or no longer) the leader; `Some` names the leader
    /// it knows of.
    ForwardToLeader(Option<NodeId>),
    /// Raft refused the write for another reason or stopped.
    Fatal(String),
    /// The batcher stopped (node shutting down).
    ShuttingDown,
    /// Raft did not answer within the write timeout: the entry may or may
    /// not commit later (outcome unknown; the caller treats it as a
    /// timeout).
    Stranded(Duration),
}

/// Writes one entry through Raft: the part of the batcher that openraft
/// does (a trait so the batching and its timeout can be tested alone).
pub(crate) trait EntryWriter: Send + Sync + 'static {
    /// Commits `entry` and returns what applying it did.
    fn write(
        &self,
        entry: Command,
    ) -> impl Future<Output = Result<CommandResult, BatchWriteError>> + Send;
}

impl EntryWriter for Raft {
    async fn write(&self, entry: Command) -> Result<CommandResult, BatchWriteError> {
        match self.client_write(entry).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(BatchWriteError::ForwardToLeader(f.leader_id))
            }
            Err(RaftError::APIError(e)) => Err(BatchWriteError::Fatal(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(BatchWriteError::Fatal(e.to_string())),
        }
    }
}

struct Proposal {
    command: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<CommandResult, BatchWriteError>>,
}

/// The handle proposers use; cheap to clone.
#[derive(Clone)]
pub(crate) struct WriteBatcher {
    tx: mpsc::Sender<Proposal>,
}

impl WriteBatcher {
    /// Starts the batching task on `writer` (the node's Raft); a write
    /// gets `write_timeout` before it counts as stranded; no batch starts
    /// while `paused` is true. Returns the handle and the task, which ends
    /// only at `shutdown`.
    pub(crate) fn start<W: EntryWriter>(
        writer: W,
        write_timeout: Duration,
        paused: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> (WriteBatcher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run(Arc::new(writer), write_timeout, paused, rx, shutdown));
        (WriteBatcher { tx }, task)
    }

    /// Commits `command` (which must be batchable) in the next batch entry
    /// and returns its own result.
    pub(crate) async fn write(&self, command: Command) -> Result<CommandResult, BatchWriteError> {
        debug_assert!(command.batchable(), "{} is not batchable", command.kind());
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal {
            bytes: body_bytes(&command),
            command,
            reply,
        };
        self.tx
            .send(proposal)
            .await
            .map_err(|_| BatchWriteError::ShuttingDown)?;
        answer.await.map_err(|_| BatchWriteError::ShuttingDown)?
    }
}

/// The body octets a command carries (what makes an entry large).
fn body_bytes(command: &Command) -> usize {
    match command {
        Command::Enqueue(e) => e.body.len(),
        Command::Attempt { dsn: Some(d), .. } => d.body.len(),
        _ => 0,
    }
}

async fn run<W: EntryWriter>(
    writer: Arc<W>,
    write_timeout: Duration,
    mut paused: watch::Receiver<bool>,
    mut rx: mpsc::Receiver<Proposal>,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    loop {
        // Wait for room first: while every slot is busy, proposals keep
        // queuing and the next batch grows.
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let first = tokio::select! {
            proposal = rx.recv() => match proposal {
                Some(p) => p,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        // No batch is written during a leadership transfer (see the module
        // doc): it waits, and proposals arriving meanwhile queue behind it.
        // A closed sender (the cluster is gone) holds nothing.
        tokio::select! {
            _ = paused.wait_for(|p| !*p) => {}
            _ = shutdown.cancelled() => return,
        }
        let writer = writer.clone();
        tokio::spawn(async move {
            commit(&*writer, write_timeout, batch).await;
            drop(permit);
        });
    }
}

/// Commits one batch (a lone proposal as a plain entry) and answers every
/// proposer, within `write_timeout`.
async fn commit<W: EntryWriter>(writer: &W, write_timeout: Duration, batch: Vec<Proposal>) {
    let (commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let n = commands.len();
    let entry = if n == 1 {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands)
    };
    let written = tokio::time::timeout(write_timeout, writer.write(entry))
        .await
        .unwrap_or_else(|_| {
            warn!(
                commands = n,
                timeout = ?write_timeout,
                "a write got no answer from Raft; giving it up as stranded (outcome unknown)"
            );
            crate::metrics::stranded_write();
            Err(BatchWriteError::Stranded(write_timeout))
        });
    let results: Vec<Result<CommandResult, BatchWriteError>> = match written {
        Ok(data) => match (n, data) {
            (1, result) => vec![Ok(result)],
            (_, CommandResult::Batch(results)) if results.len() == n => {
                results.into_iter().map(Ok).collect()
            }
            (_, other) => {
                // A whole-batch rejection (never expected: the batcher
                // keeps within the limits apply checks).
                warn!(commands = n, result = ?other, "batch entry not applied as a batch");
                vec![Ok(other); n]
            }
        },
        Err(e) => vec![Err(e); n],
    };
    for (reply, result) in replies.into_iter().zip(results) {
        // A proposer that gave up (timeout) no longer listens: fine.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    //! The batcher alone, over a writer that can be made to never answer.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use relay_types::{MessageId, UnixMillis};

    use super::*;

    /// Never answers its first write; answers every later one.
    #[derive(Default)]
    struct FirstWriteHangs {
        writes: AtomicUsize,
    }

    impl EntryWriter for FirstWriteHangs {
        async fn write(&self, _entry: Command) -> Result<CommandResult, BatchWriteError> {
            if self.writes.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            Ok(CommandResult::Applied { affected: 1 })
        }
    }

    fn delivered(n: u8) -> Command {
        Command::Delivered {
            id: MessageId([n; 16]),
            by: 1,
            at: UnixMillis(1),
            target: "t".into(),
            reply: "250 ok".into(),
        }
    }

    #[tokio::test]
    async fn a_write_raft_never_answers_is_given_up_and_the_next_one_goes_through() {
        let timeout = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let (_paused, not_paused) = watch::channel(false);
        let (batcher, _task) =
            WriteBatcher::start(FirstWriteHangs::default(), timeout, not_paused, shutdown);

        let first = batcher.write(delivered(1)).await;
        assert!(
            matches!(first, Err(BatchWriteError::Stranded(t)) if t == timeout),
            "{first:?}"
        );
        // Without the bound the slot stays taken and this never returns.
        let second = tokio::time::timeout(Duration::from_secs(30), batcher.write(delivered(2)))
            .await
            .expect("the slot was released: the next write is not stuck behind the first");
        assert_eq!(second.unwrap(), CommandResult::Applied { affected: 1 });
    }

    /// Counts the entries written.
    #[derive(Default)]
    struct Counting {
        writes: Arc<AtomicUsize>,
    }

    impl EntryWriter for Counting {
        async fn write(&self, _entry: Command) -> Result<CommandResult, BatchWriteError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(CommandResult::Applied { affected: 1 })
        }
    }

    // Paused time: the clock moves only once every task is idle, so after
    // the sleep the batcher has done all it would do while paused.
    #[tokio::test(start_paused = true)]
    async fn nothing_is_written_while_paused_and_everything_held_is_written_after() {
        let shutdown = CancellationToken::new();
        let (pause, paused) = watch::channel(true);
        let writer = Counting::default();
        let writes = writer.writes.clone();
        let (batcher, _task) =
            WriteBatcher::start(writer, Duration::from_secs(5), paused, shutdown.clone());
        let held: Vec<_> = (1..=5)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.write(delivered(n)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(writes.load(Ordering::SeqCst), 0, "written while paused");

        pause.send_replace(false);
        for h in held {
            let result = tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .expect("answered after the pause")
                .expect("task");
            assert!(result.is_ok(), "{result:?}");
        }
        assert!(writes.load(Ordering::SeqCst) >= 1);
        shutdown.cancel();
    }
}
