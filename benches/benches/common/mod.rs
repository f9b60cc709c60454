//! Entries shared by the microbenchmarks.
// Each bench uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use openraft::{Entry, EntryPayload};
use relay_store::TypeConfig;
use relay_types::{Command, Enqueue, Envelope, MessageId, MessageInfo, Recipient, UnixMillis};

/// A message body of about `size` octets: a small header section and
/// 64-octet CRLF lines, as a relay stores it.
pub fn body(size: usize) -> Bytes {
    let mut body = String::from("Received: from bench.test\r\nSubject: bench\r\n\r\n");
    while body.len() < size {
        body.push_str("0123456789012345678901234567890123456789012345678901234567890\r\n");
    }
    Bytes::from(body)
}

/// An `Enqueue` of `body` with id `n`, owned by node 1.
pub fn enqueue(n: u64, body: Bytes) -> Command {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    Command::Enqueue(Box::new(Enqueue {
        id: MessageId(id),
        received_at: UnixMillis(1_700_000_000_000 + n),
        accepted_by: 1,
        owner: 1,
        envelope: Envelope {
            reverse_path: "bench@load.test".into(),
            recipients: vec![Recipient::new("rcpt@dest.test")],
            helo: "bench.test".into(),
            client_addr: "127.0.0.1:40000".into(),
            ..Default::default()
        },
        info: MessageInfo {
            size: body.len() as u64,
            ..Default::default()
        },
        checksum: relay_queue::body_checksum(&body),
        expires_at: UnixMillis(1_700_000_000_000 + 5 * 86_400_000),
        body,
    }))
}

/// `n` term-1 log entries from index `first`, each an `Enqueue` of `body`.
pub fn enqueue_entries(first: u64, n: u64, body: &Bytes) -> Vec<Entry<TypeConfig>> {
    (first..first + n)
        .map(|i| Entry::<TypeConfig> {
            log_id: openraft::testing::log_id(1, 1, i),
            payload: EntryPayload::Normal(enqueue(i, body.clone())),
        })
        .collect()
}

/// The criterion settings every microbenchmark uses: few, short samples,
/// so each bench finishes in under a minute on two cores.
pub fn short_runs() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}
