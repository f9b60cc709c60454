//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload};
use proptest::prelude::*;
use relay_queue::body_checksum;
use relay_store::{StateMachine, TypeConfig};
use relay_types::{
    AdminAction, AttemptOutcome, Command, CommandResult, Enqueue, Envelope, MessageFilter,
    MessageId, MessageInfo, Recipient, RecipientOutcome, Route, Selector, TlsPolicy, UnixMillis,
};

/// Leader term used for test entries.
pub const TERM: u64 = 1;
/// Leader node used for test entries.
pub const LEADER: u64 = 1;

pub fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

/// Every id the command strategy can produce (messages and their DSNs).
pub fn all_ids() -> Vec<MessageId> {
    (0u8..6).chain(100u8..106).map(id).collect()
}

pub fn enqueue(n: u8, owner: u64, rcpts: u8, null_sender: bool) -> Enqueue {
    let body = Bytes::from(format!("Subject: m{n}\r\n\r\nbody {n}\r\n"));
    Enqueue {
        id: id(n),
        received_at: UnixMillis(1_000 + n as u64),
        accepted_by: owner,
        owner,
        envelope: Envelope {
            reverse_path: if null_sender {
                String::new()
            } else {
                format!("s{n}@sender.test")
            },
            recipients: (0..rcpts.max(1))
                .map(|r| {
                    Recipient::new(format!(
                        "r{r}@{}.test",
                        if r % 2 == 0 { "example" } else { "other" }
                    ))
                })
                .collect(),
            ..Default::default()
        },
        info: MessageInfo::default(),
        checksum: body_checksum(&body),
        expires_at: UnixMillis(10_000_000),
        body,
    }
}

pub fn normal(index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: openraft::testing::log_id(TERM, LEADER, index),
        payload: EntryPayload::Normal(command),
    }
}

pub fn blank(index: u64) -> Entry<TypeConfig> {
    openraft::testing::blank_ent::<TypeConfig>(TERM, LEADER, index)
}

pub fn membership(index: u64, voters: &[u64]) -> Entry<TypeConfig> {
    let set: BTreeSet<u64> = voters.iter().copied().collect();
    openraft::testing::membership_ent::<TypeConfig>(TERM, LEADER, index, vec![set])
}

/// Applies one entry and returns its result.
pub async fn apply_one(sm: &mut StateMachine, entry: Entry<TypeConfig>) -> CommandResult {
    let mut results = sm.apply([entry]).await.expect("apply");
    assert_eq!(results.len(), 1);
    results.pop().expect("one result")
}

/// A small, varied log: messages for three owners, an attempt, a hold, a
/// reassign, routes, and a delivery.
pub fn sample_commands() -> Vec<Command> {
    vec![
        Command::Enqueue(Box::new(enqueue(1, 1, 2, false))),
        Command::Enqueue(Box::new(enqueue(2, 2, 1, false))),
        Command::Enqueue(Box::new(enqueue(3, 3, 3, false))),
        Command::Enqueue(Box::new(enqueue(4, 1, 1, true))),
        Command::SetRoute {
            domain: "example.test".into(),
            route: Route::new(vec!["127.0.0.1:2600".into()], TlsPolicy::None),
        },
        Command::Attempt {
            id: id(1),
            by: 1,
            at: UnixMillis(2_000),
            target: "127.0.0.1:2600".into(),
            outcomes: vec![RecipientOutcome {
                index: 0,
                outcome: AttemptOutcome::Delivered,
                reply: "250 ok".into(),
            }],
            next_attempt_at: UnixMillis(2_300),
            dsn: None,
        },
        Command::Admin {
            action: AdminAction::Hold,
            selector: Selector::Ids(vec![id(2)]),
            by: "op".into(),
            reason: "check".into(),
            at: UnixMillis(2_100),
        },
        Command::Reassign {
            selector: Selector::Filter(MessageFilter {
                owner: Some(3),
                ..Default::default()
            }),
            to: 1,
            at: UnixMillis(2_200),
        },
        Command::Delivered {
            id: id(4),
            by: 1,
            at: UnixMillis(2_400),
            target: "127.0.0.1:2600".into(),
            reply: "250 ok".into(),
        },
    ]
}

fn outcome() -> impl Strategy<Value = AttemptOutcome> {
    prop_oneof![
        Just(AttemptOutcome::Delivered),
        Just(AttemptOutcome::Deferred),
        Just(AttemptOutcome::Failed)
    ]
}

fn filter() -> impl Strategy<Value = MessageFilter> {
    (
        prop::option::of(1u64..4),
        prop::option::of(prop_oneof![
            Just("example.test".to_string()),
            Just("other.test".to_string())
        ]),
        prop::option::of(any::<bool>()),
        prop::option::of((1_000u64..1_008).prop_map(UnixMillis)),
    )
        .prop_map(|(owner, to_domain, held, received_before)| MessageFilter {
            owner,
            to_domain,
            from: None,
            received_before,
            held,
        })
}

/// Random commands over a few ids, owners and routes (the same shape as
/// relay-queue's property tests, plus filter-selected admin actions).
/// Any command, or a batch of up to five (group commit), which may hold
/// commands that cannot ride in a batch (they must be rejected alone).
pub fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => single_command(),
        1 => prop::collection::vec(single_command(), 0..6).prop_map(Command::Batch),
    ]
}

fn single_command() -> impl Strategy<Value = Command> {
    let n = 0u8..6;
    let node = 1u64..4;
    prop_oneof![
        3 => (n.clone(), node.clone(), 1u8..4, any::<bool>())
            .prop_map(|(n, o, r, null)| Command::Enqueue(Box::new(enqueue(n, o, r, null)))),
        2 => (
            n.clone(),
            node.clone(),
            prop::collection::vec((0u32..4, outcome()), 0..4),
            any::<bool>(),
            0u64..5000
        )
            .prop_map(|(n, by, outs, with_dsn, at)| Command::Attempt {
                id: id(n),
                by,
                at: UnixMillis(at),
                target: "127.0.0.1:2600".into(),
                outcomes: outs
                    .into_iter()
                    .map(|(index, outcome)| RecipientOutcome {
                        index,
                        outcome,
                        reply: "x".into()
                    })
                    .collect(),
                next_attempt_at: UnixMillis(at + 300),
                dsn: with_dsn.then(|| Box::new(enqueue(n.wrapping_add(100), by, 1, true))),
            }),
        1 => (n.clone(), node.clone()).prop_map(|(n, by)| Command::Delivered {
            id: id(n),
            by,
            at: UnixMillis(7),
            target: "t".into(),
            reply: "250 ok".into()
        }),
        1 => (node.clone(), node.clone()).prop_map(|(from, to)| Command::Reassign {
            selector: Selector::Filter(MessageFilter {
                owner: Some(from),
                ..Default::default()
            }),
            to,
            at: UnixMillis(9),
        }),
        2 => (n.clone(), 0u8..4, 0u64..5000).prop_map(|(n, a, at)| Command::Admin {
            action: [AdminAction::Hold, AdminAction::Release, AdminAction::Delete, AdminAction::RetryNow][a as usize],
            selector: Selector::Ids(vec![id(n)]),
            by: "op".into(),
            reason: "test".into(),
            at: UnixMillis(at),
        }),
        1 => (filter(), 0u8..4, 0u64..5000).prop_map(|(filter, a, at)| Command::Admin {
            action: [AdminAction::Hold, AdminAction::Release, AdminAction::Delete, AdminAction::RetryNow][a as usize],
            selector: Selector::Filter(filter),
            by: "op".into(),
            reason: "by filter".into(),
            at: UnixMillis(at),
        }),
        1 => (0u8..3).prop_map(|d| Command::SetRoute {
            domain: format!("d{d}.test"),
            route: Route {
                // One of the domains shaped: its records are format 2.
                shaping: relay_types::Shaping {
                    concurrency: (d == 2).then_some(3),
                    rate: None,
                },
                ..Route::new(vec![format!("127.0.0.{d}:2600")], TlsPolicy::None)
            },
        }),
        1 => (0u8..3).prop_map(|d| Command::RemoveRoute {
            domain: format!("d{d}.test")
        }),
    ]
}

/// Filters to compare listings with.
pub fn filters() -> Vec<MessageFilter> {
    let mut out = vec![MessageFilter::default()];
    for owner in 1..4 {
        out.push(MessageFilter {
            owner: Some(owner),
            ..Default::default()
        });
    }
    out.push(MessageFilter {
        held: Some(true),
        ..Default::default()
    });
    out.push(MessageFilter {
        owner: Some(2),
        held: Some(false),
        ..Default::default()
    });
    out.push(MessageFilter {
        to_domain: Some("other.test".into()),
        ..Default::default()
    });
    out
}

/// Every byte of a snapshot's file.
pub fn snapshot_bytes(snapshot: &openraft::Snapshot<TypeConfig>) -> Vec<u8> {
    std::fs::read(snapshot.snapshot.path()).expect("read the snapshot file")
}

/// Sends `snapshot` to `target` as openraft does: streamed into the file
/// `begin_receiving_snapshot` gives, then installed.
pub async fn transfer(
    target: &mut StateMachine,
    snapshot: &openraft::Snapshot<TypeConfig>,
) -> Result<(), openraft::StorageError<u64>> {
    let mut source = tokio::fs::File::open(snapshot.snapshot.path())
        .await
        .expect("open the snapshot file");
    let mut receiving = target.begin_receiving_snapshot().await?;
    tokio::io::copy(&mut source, &mut *receiving)
        .await
        .expect("copy the snapshot");
    tokio::io::AsyncWriteExt::shutdown(&mut *receiving)
        .await
        .expect("flush the received snapshot");
    target.install_snapshot(&snapshot.meta, receiving).await
}

/// Installs `bytes` as if received from a leader with `meta`.
pub async fn install_bytes(
    target: &mut StateMachine,
    meta: &openraft::SnapshotMeta<u64, openraft::BasicNode>,
    bytes: &[u8],
) -> Result<(), openraft::StorageError<u64>> {
    let mut receiving = target.begin_receiving_snapshot().await?;
    tokio::io::AsyncWriteExt::write_all(&mut *receiving, bytes)
        .await
        .expect("write the snapshot");
    tokio::io::AsyncWriteExt::shutdown(&mut *receiving)
        .await
        .expect("flush the received snapshot");
    target.install_snapshot(meta, receiving).await
}

/// Message number `i` with a body of `body_len` bytes that do not compress
/// (so RocksDB and the snapshot file hold about what a real queue would).
pub fn enqueue_sized(i: u64, owner: u64, body_len: usize) -> Enqueue {
    let mut body = format!("Subject: m{i}\r\n\r\n").into_bytes();
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while body.len() < body_len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(b'!' + (x % 90) as u8);
    }
    let body = Bytes::from(body);
    let mut id = [0xAAu8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    Enqueue {
        id: MessageId(id),
        received_at: UnixMillis(1_000 + i),
        accepted_by: owner,
        owner,
        envelope: Envelope {
            reverse_path: format!("s{i}@sender.test"),
            recipients: vec![Recipient::new(format!("r{i}@example.test"))],
            ..Default::default()
        },
        info: MessageInfo::default(),
        checksum: body_checksum(&body),
        expires_at: UnixMillis(10_000_000),
        body,
    }
}

/// Applies `count` messages (`enqueue_sized(first_id + k, owner 1..=3,
/// body_len)`) as entries from log index `first_index`, a thousand entries
/// per `apply`; returns the last index.
pub async fn enqueue_many(
    sm: &mut StateMachine,
    first_index: u64,
    first_id: u64,
    count: u64,
    body_len: usize,
) -> u64 {
    let mut index = first_index;
    let mut k = 0;
    while k < count {
        let n = (count - k).min(1_000);
        let entries: Vec<Entry<TypeConfig>> = (0..n)
            .map(|j| {
                let i = first_id + k + j;
                normal(
                    index + j,
                    Command::Enqueue(Box::new(enqueue_sized(i, 1 + i % 3, body_len))),
                )
            })
            .collect();
        sm.apply(entries).await.expect("apply");
        index += n;
        k += n;
    }
    index - 1
}
