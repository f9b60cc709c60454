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
            route: Route {
                targets: vec!["127.0.0.1:2600".into()],
                tls: TlsPolicy::None,
            },
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
                targets: vec![format!("127.0.0.{d}:2600")],
                tls: TlsPolicy::None
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
