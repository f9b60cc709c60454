//! The fault suites' load driver and verdict, shared by the process suite
//! (tests/failover.rs) and the Docker suite (tests/docker_faults.rs).
//!
//! Senders submit uniquely marked messages (the marker is the Subject) and
//! record what each got: `250` (acknowledged: must arrive) or anything else
//! (may or may not arrive). After the queue drained, [`FaultVerdict`]
//! compares that ledger with what the target received.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::smtp::{SmtpClient, transaction};

/// A test message whose Subject is `marker`.
pub fn message(marker: &str) -> Vec<u8> {
    format!(
        "From: <s@sender.test>\r\nTo: <r@dest.test>\r\nSubject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\nbody of {marker}\r\n"
    )
    .into_bytes()
}

/// The Subject of a received message.
pub fn subject(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
}

/// Subject (marker) → copies among `messages` (what a target received).
pub fn copies(messages: &[relay_testkit::ReceivedMessage]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in messages {
        if let Some(subject) = subject(&m.data) {
            *out.entry(subject).or_insert(0) += 1;
        }
    }
    out
}

/// `(subject, EHLO name of the delivering relay)` per received copy: what
/// [`FaultVerdict::new`] compares with the ledger.
pub fn received(messages: &[relay_testkit::ReceivedMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter_map(|m| subject(&m.data).map(|s| (s, m.helo.clone())))
        .collect()
}

/// Sends `n` messages to node `id` of `cluster` in one session, each marked
/// `{tag}-{i}`, all of which must get `250`; the markers.
pub async fn queue_on(
    cluster: &crate::ProcessCluster,
    id: u64,
    tag: &str,
    n: usize,
) -> Vec<String> {
    let mut client = SmtpClient::connect_ehlo(cluster.smtp_addr(id))
        .await
        .expect("session");
    let mut markers = Vec::new();
    for i in 0..n {
        let marker = format!("{tag}-{i}");
        let reply = transaction(
            &mut client,
            "s@sender.test",
            &["r@dest.test"],
            &message(&marker),
        )
        .await
        .expect("transaction");
        assert_eq!(reply.code, 250, "{reply}");
        markers.push(marker);
    }
    markers
}

/// What the load driver saw for each message.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Got 250: must arrive.
    pub acked: BTreeSet<String>,
    /// Got 4xx/5xx or the session broke: may or may not arrive.
    pub unacked: BTreeSet<String>,
    /// (transaction start, 250 received, node) of every acknowledged message.
    pub ack_times: Vec<(Instant, Instant, u64)>,
    /// Marker → the queue id the `250` named.
    pub queue_ids: BTreeMap<String, String>,
    /// Marker → when its `250` arrived (wall clock, to compare with times
    /// a node reports).
    pub acked_at: BTreeMap<String, std::time::SystemTime>,
}

impl Ledger {
    /// The first 250 from a node other than `not` for a transaction begun
    /// after `after`.
    pub fn first_ack_after(&self, after: Instant, not: u64) -> Option<Instant> {
        self.ack_times
            .iter()
            .filter(|(started, _, node)| *started > after && *node != not)
            .map(|(_, acked, _)| *acked)
            .min()
    }
}

/// One sender: sequential transactions to node `node` at `addr`,
/// reconnecting after errors, until `stop`.
pub async fn sender(
    addr: SocketAddr,
    node: u64,
    lane: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
) {
    let mut n = 0u64;
    let mut client: Option<SmtpClient> = None;
    while !stop.is_cancelled() {
        if client.is_none() {
            client =
                match tokio::time::timeout(Duration::from_secs(5), SmtpClient::connect_ehlo(addr))
                    .await
                {
                    Ok(Ok(c)) => Some(c),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
        }
        let marker = format!("load-{node}-{lane}-{n}");
        n += 1;
        let session = client.as_mut().expect("connected");
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            transaction(
                session,
                "s@sender.test",
                &["r@dest.test"],
                &message(&marker),
            ),
        )
        .await;
        let mut ledger = ledger.lock().unwrap();
        match outcome {
            Ok(Ok(reply)) if reply.code == 250 => {
                if let Some(id) = reply.queued_id() {
                    ledger.queue_ids.insert(marker.clone(), id);
                }
                ledger
                    .acked_at
                    .insert(marker.clone(), std::time::SystemTime::now());
                ledger.acked.insert(marker);
                ledger.ack_times.push((started, Instant::now(), node));
            }
            Ok(Ok(_)) => {
                ledger.unacked.insert(marker);
            }
            _ => {
                ledger.unacked.insert(marker);
                client = None;
            }
        }
    }
}

/// Starts `lanes` senders per node, `(node id, SMTP address)` each.
pub fn spawn_senders(
    nodes: &[(u64, SocketAddr)],
    lanes: usize,
    ledger: &Arc<Mutex<Ledger>>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut senders = Vec::new();
    for &(node, addr) in nodes {
        for lane in 0..lanes {
            senders.push(tokio::spawn(sender(
                addr,
                node,
                lane,
                ledger.clone(),
                stop.clone(),
            )));
        }
    }
    senders
}

/// The suite's figures, from the ledger and what the target received
/// (`(subject, EHLO name of the delivering relay)` per received copy).
#[derive(Debug)]
pub struct FaultVerdict {
    /// Messages acknowledged with 250.
    pub acked: usize,
    /// Messages refused or cut off.
    pub unacked: usize,
    /// Acknowledged but never received: must be empty.
    pub lost: Vec<String>,
    /// Extra copies received.
    pub duplicates: usize,
    /// Duplicated messages delivered by two different relays: the takeover
    /// window (the first owner stopped after the target's 250, before its
    /// `Delivered` committed).
    pub duplicated_across_nodes: usize,
    /// Duplicated messages delivered twice by one relay: a retry after a
    /// lost reply or a restart in the same window.
    pub duplicated_by_one_node: usize,
    /// Refused or cut off, delivered all the same (a late commit).
    pub unacked_delivered: usize,
    /// Received but never sent: must be 0.
    pub never_sent: usize,
}

impl FaultVerdict {
    /// Compares `ledger` with `received`.
    pub fn new(ledger: &Ledger, received: &[(String, String)]) -> FaultVerdict {
        let mut delivered_by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (subject, helo) in received {
            delivered_by.entry(subject).or_default().push(helo);
        }
        let (mut across, mut one) = (0, 0);
        for helos in delivered_by.values().filter(|h| h.len() > 1) {
            let distinct: BTreeSet<&&str> = helos.iter().collect();
            if distinct.len() > 1 {
                across += 1;
            } else {
                one += 1;
            }
        }
        FaultVerdict {
            acked: ledger.acked.len(),
            unacked: ledger.unacked.len(),
            lost: ledger
                .acked
                .iter()
                .filter(|m| !delivered_by.contains_key(m.as_str()))
                .cloned()
                .collect(),
            duplicates: delivered_by.values().map(|h| h.len() - 1).sum(),
            duplicated_across_nodes: across,
            duplicated_by_one_node: one,
            unacked_delivered: ledger
                .unacked
                .iter()
                .filter(|m| delivered_by.contains_key(m.as_str()))
                .count(),
            never_sent: delivered_by
                .keys()
                .filter(|m| !ledger.acked.contains(**m) && !ledger.unacked.contains(**m))
                .count(),
        }
    }
}

impl std::fmt::Display for FaultVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked {}, unacked {}, acked-but-lost {}, duplicates {} (messages delivered by two \
             nodes {}, twice by one node {}), unacked-but-delivered {}, never sent {}",
            self.acked,
            self.unacked,
            self.lost.len(),
            self.duplicates,
            self.duplicated_across_nodes,
            self.duplicated_by_one_node,
            self.unacked_delivered,
            self.never_sent
        )
    }
}

/// Median and maximum of `durations` (sorted in place).
pub fn median_max(durations: &mut [Duration]) -> (Option<Duration>, Option<Duration>) {
    durations.sort();
    (
        durations.get(durations.len() / 2).copied(),
        durations.last().copied(),
    )
}
