//! Property tests of the pure state machine: determinism across replicas and
//! "no body dropped except by a finishing entry" (docs/design.md, invariants 3 and 5).

use bytes::Bytes;
use proptest::prelude::*;
use relay_queue::{MemQueue, QueueRead, body_checksum};
use relay_types::{
    AdminAction, AttemptOutcome, Command, CommandResult, Enqueue, Envelope, MessageFilter,
    MessageId, MessageInfo, Recipient, RecipientOutcome, Rejection, Route, Selector, TlsPolicy,
    UnixMillis,
};

fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

fn enqueue(n: u8, owner: u64, rcpts: u8, null_sender: bool) -> Enqueue {
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
                .map(|r| Recipient::new(format!("r{r}@example.test")))
                .collect(),
            ..Default::default()
        },
        info: MessageInfo::default(),
        checksum: body_checksum(&body),
        expires_at: UnixMillis(10_000_000),
        body,
    }
}

fn outcome() -> impl Strategy<Value = AttemptOutcome> {
    prop_oneof![
        Just(AttemptOutcome::Delivered),
        Just(AttemptOutcome::Deferred),
        Just(AttemptOutcome::Failed)
    ]
}

/// Any command, or a batch of up to five (group commit), which may hold
/// commands that cannot ride in a batch (they must be rejected alone).
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => single_command(),
        1 => prop::collection::vec(single_command(), 0..6).prop_map(Command::Batch),
    ]
}

fn single_command() -> impl Strategy<Value = Command> {
    let n = 0u8..6;
    let node = 1u64..4;
    prop_oneof![
        (n.clone(), node.clone(), 1u8..4, any::<bool>())
            .prop_map(|(n, o, r, null)| Command::Enqueue(Box::new(enqueue(n, o, r, null)))),
        (
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
        (n.clone(), node.clone()).prop_map(|(n, by)| Command::Delivered {
            id: id(n),
            by,
            at: UnixMillis(7),
            target: "t".into(),
            reply: "250 ok".into()
        }),
        (node.clone(), node.clone()).prop_map(|(from, to)| Command::Reassign {
            selector: Selector::Filter(MessageFilter {
                owner: Some(from),
                ..Default::default()
            }),
            to,
            at: UnixMillis(9),
        }),
        (n.clone(), 0u8..4).prop_map(|(n, a)| Command::Admin {
            action: [
                AdminAction::Hold,
                AdminAction::Release,
                AdminAction::Delete,
                AdminAction::RetryNow
            ][a as usize],
            selector: Selector::Ids(vec![id(n)]),
            by: "op".into(),
            reason: "test".into(),
            at: UnixMillis(11),
        }),
        (0u8..3).prop_map(|d| Command::SetRoute {
            domain: format!("d{d}.test"),
            route: Route::new(vec!["127.0.0.1:2600".into()], TlsPolicy::None),
        }),
        (0u8..3).prop_map(|d| Command::RemoveRoute {
            domain: format!("d{d}.test")
        }),
        (node.clone(), prop::collection::vec(1u64..4, 0..3)).prop_map(|(from, to)| {
            Command::TakeOver {
                from,
                to,
                at: UnixMillis(13),
            }
        }),
        (n.clone(), node.clone()).prop_map(|(n, by)| Command::DuplicateDelivered {
            id: id(n),
            by,
            at: UnixMillis(15),
            target: "t".into(),
            reply: "250 ok".into(),
            why: "test".into(),
        }),
        // Ids here are [n; 16]: a cutoff of k << 40 ms forgets ids below k.
        (0u64..8).prop_map(|k| Command::Prune {
            before: UnixMillis(k << 40),
        }),
    ]
}

/// [`single_command`] without history pruning.
fn command_without_prune() -> impl Strategy<Value = Command> {
    single_command().prop_filter("no prune", |c| !matches!(c, Command::Prune { .. }))
}

/// Is this entry allowed to drop `victim`'s body?
fn may_finish(command: &Command, victim: MessageId) -> bool {
    match command {
        Command::Delivered { id, .. } | Command::Attempt { id, .. } => *id == victim,
        Command::Admin {
            action: AdminAction::Delete,
            ..
        } => true,
        Command::Batch(commands) => commands
            .iter()
            .any(|c| c.batchable() && may_finish(c, victim)),
        _ => false,
    }
}

/// Every id the generators use (messages and their DSNs).
fn all_ids() -> Vec<MessageId> {
    (0u8..6).chain(100..106).map(id).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A copy of a message that already finished (a forwarded proposal
    /// that commits after the first copy was delivered) is refused as a
    /// duplicate, whatever happened in between, as long as the history
    /// was not pruned.
    #[test]
    fn a_second_enqueue_of_a_finished_id_is_a_duplicate(
        prefix in prop::collection::vec(command_without_prune(), 0..20),
        between in prop::collection::vec(command_without_prune(), 0..20),
        n in 0u8..6,
    ) {
        let mut q = MemQueue::default();
        let mut index = 0u64;
        let mut apply = |q: &mut MemQueue, c: &Command| {
            index += 1;
            q.apply(index, c)
        };
        for c in &prefix {
            apply(&mut q, c);
        }
        let first = Command::Enqueue(Box::new(enqueue(n, 1, 1, false)));
        if apply(&mut q, &first) != CommandResult::Enqueued(id(n)) {
            // Queued already, or finished already: refused either way.
            prop_assert_eq!(
                apply(&mut q, &first),
                CommandResult::Rejected(Rejection::Duplicate(id(n)))
            );
            return Ok(());
        }
        let owner = q.message(&id(n)).unwrap().unwrap().owner;
        apply(&mut q, &Command::Delivered {
            id: id(n),
            by: owner,
            at: UnixMillis(20),
            target: "t".into(),
            reply: "250".into(),
        });
        prop_assert!(q.is_finished(&id(n)));
        for c in &between {
            apply(&mut q, c);
        }
        prop_assert_eq!(
            apply(&mut q, &first),
            CommandResult::Rejected(Rejection::Duplicate(id(n)))
        );
        prop_assert!(q.body(&id(n)).is_none());
    }

    #[test]
    fn replicas_applying_the_same_log_reach_identical_state(log in prop::collection::vec(command(), 0..60)) {
        let mut a = MemQueue::default();
        let mut b = MemQueue::default();
        for (i, c) in log.iter().enumerate() {
            let ra = a.apply(i as u64 + 1, c);
            // Replica b decodes the entry from its wire form first, as a
            // follower does.
            let decoded: Command = relay_types::decode(&relay_types::encode(c)).unwrap();
            let rb = b.apply(i as u64 + 1, &decoded);
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(a.checksum(), b.checksum());
        prop_assert_eq!(&a, &b);
    }

    /// The wire and storage codec (format version octet + postcard):
    /// every command, every result and every state record it leads to
    /// decodes to an equal value.
    #[test]
    fn every_command_result_and_state_record_round_trips_in_the_codec(
        log in prop::collection::vec(command(), 0..40)
    ) {
        use relay_types::{decode, encode};
        let mut q = MemQueue::default();
        for (i, c) in log.iter().enumerate() {
            prop_assert_eq!(&decode::<Command>(&encode(c)).unwrap(), c);
            let result = q.apply(i as u64 + 1, c);
            prop_assert_eq!(decode::<CommandResult>(&encode(&result)).unwrap(), result);
        }
        for record in q.select(&MessageFilter::default()).unwrap() {
            prop_assert_eq!(decode::<relay_types::MessageRecord>(&encode(&record)).unwrap(), record);
        }
        for d in 0..3 {
            if let Some(route) = q.route(&format!("d{d}.test")).unwrap() {
                prop_assert_eq!(decode::<Route>(&encode(&route)).unwrap(), route);
            }
        }
        for id in all_ids() {
            for event in q.trace(&id) {
                prop_assert_eq!(decode::<relay_types::TraceEvent>(&encode(&event)).unwrap(), event);
            }
        }
    }

    #[test]
    fn only_finishing_entries_drop_a_body(log in prop::collection::vec(command(), 0..60)) {
        let mut q = MemQueue::default();
        for (i, c) in log.iter().enumerate() {
            let before = q.body_ids();
            q.apply(i as u64 + 1, c);
            let after = q.body_ids();
            for gone in before.iter().filter(|b| !after.contains(b)) {
                prop_assert!(may_finish(c, *gone), "{c:?} dropped body {gone}");
            }
            // Every queued message still has its body, and vice versa.
            prop_assert_eq!(after.len(), q.len());
        }
    }

    /// Group commit must not change what happens: a batch leaves the same
    /// messages and bodies, and answers the same, as its batchable commands
    /// committed one entry each (commands that may not ride in a batch are
    /// rejected alone). Traces differ only in their log index.
    #[test]
    fn a_batch_does_what_its_commands_do_one_entry_each(
        prefix in prop::collection::vec(command(), 0..20),
        batch in prop::collection::vec(single_command(), 0..8),
    ) {
        let mut batched = MemQueue::default();
        let mut single = MemQueue::default();
        for (i, c) in prefix.iter().enumerate() {
            batched.apply(i as u64 + 1, c);
            single.apply(i as u64 + 1, c);
        }
        let mut index = prefix.len() as u64;
        let got = batched.apply(index + 1, &Command::Batch(batch.clone()));
        let mut want = Vec::new();
        for c in &batch {
            if c.batchable() {
                index += 1;
                want.push(single.apply(index, c));
            } else {
                want.push(CommandResult::Rejected(Rejection::Invalid(format!(
                    "a {} command cannot ride in a batch",
                    c.kind()
                ))));
            }
        }
        prop_assert_eq!(got, CommandResult::Batch(want));
        for id in all_ids() {
            prop_assert_eq!(batched.message(&id).unwrap(), single.message(&id).unwrap());
            prop_assert_eq!(batched.body(&id), single.body(&id));
        }
        prop_assert_eq!(batched.counts(), single.counts());
    }
}

#[test]
fn an_oversized_batch_is_rejected_whole() {
    let mut q = MemQueue::default();
    let batch = (0..=relay_types::MAX_BATCH_COMMANDS)
        .map(|n| Command::Enqueue(Box::new(enqueue((n % 200) as u8, 1, 1, false))))
        .collect();
    let result = q.apply(1, &Command::Batch(batch));
    assert!(matches!(
        result,
        CommandResult::Rejected(Rejection::Invalid(_))
    ));
    assert!(q.is_empty());
}

#[test]
fn a_repeated_id_within_one_batch_is_a_duplicate() {
    let mut q = MemQueue::default();
    let e = Command::Enqueue(Box::new(enqueue(1, 1, 1, false)));
    let result = q.apply(1, &Command::Batch(vec![e.clone(), e]));
    assert_eq!(
        result,
        CommandResult::Batch(vec![
            CommandResult::Enqueued(id(1)),
            CommandResult::Rejected(Rejection::Duplicate(id(1))),
        ])
    );
    assert_eq!(q.len(), 1);
}

#[test]
fn attempt_from_a_non_owner_is_rejected_and_changes_nothing() {
    let mut q = MemQueue::default();
    q.apply(1, &Command::Enqueue(Box::new(enqueue(1, 1, 1, false))));
    let before = q.checksum();
    let result = q.apply(
        2,
        &Command::Delivered {
            id: id(1),
            by: 2,
            at: UnixMillis(5),
            target: "t".into(),
            reply: "250".into(),
        },
    );
    assert!(matches!(
        result,
        relay_types::CommandResult::Rejected(relay_types::Rejection::NotOwner {
            owner: 1,
            by: 2,
            ..
        })
    ));
    assert_eq!(q.len(), 1);
    // Only last_applied moved; the tables are unchanged.
    assert_eq!(q.checksum(), before);
}

#[test]
fn partial_delivery_keeps_the_body_until_the_last_recipient_finishes() {
    let mut q = MemQueue::default();
    q.apply(1, &Command::Enqueue(Box::new(enqueue(1, 1, 2, false))));
    let attempt = |index, outcome| Command::Attempt {
        id: id(1),
        by: 1,
        at: UnixMillis(10),
        target: "t".into(),
        outcomes: vec![RecipientOutcome {
            index,
            outcome,
            reply: "r".into(),
        }],
        next_attempt_at: UnixMillis(400),
        dsn: None,
    };
    q.apply(2, &attempt(0, AttemptOutcome::Delivered));
    assert!(q.body(&id(1)).is_some(), "one recipient still pending");
    assert_eq!(q.counts().deferred, 1);
    assert!(q.due(1, UnixMillis(399), 10).is_empty());
    assert_eq!(q.due(1, UnixMillis(400), 10).len(), 1);
    q.apply(3, &attempt(1, AttemptOutcome::Failed));
    assert!(q.body(&id(1)).is_none(), "all recipients finished");
    let trace = q.trace(&id(1));
    assert_eq!(
        trace.len(),
        4,
        "accepted, two attempts, finished: {trace:?}"
    );
}

#[test]
fn corrupted_enqueue_is_rejected() {
    let mut q = MemQueue::default();
    let mut e = enqueue(1, 1, 1, false);
    e.body = Bytes::from_static(b"tampered");
    let r = q.apply(1, &Command::Enqueue(Box::new(e)));
    assert_eq!(
        r,
        relay_types::CommandResult::Rejected(relay_types::Rejection::ChecksumMismatch(id(1)))
    );
    assert!(q.is_empty());
}

#[test]
fn a_takeover_spreads_every_message_of_the_owner_in_id_order() {
    let mut q = MemQueue::default();
    for n in 0..5 {
        q.apply(
            n as u64 + 1,
            &Command::Enqueue(Box::new(enqueue(n, 3, 1, false))),
        );
    }
    q.apply(6, &Command::Enqueue(Box::new(enqueue(9, 1, 1, false))));
    let result = q.apply(
        7,
        &Command::TakeOver {
            from: 3,
            to: vec![1, 2],
            at: UnixMillis(50),
        },
    );
    assert_eq!(result, CommandResult::Applied { affected: 5 });
    let owners: Vec<u64> = (0..5)
        .map(|n| q.message(&id(n)).unwrap().unwrap().owner)
        .collect();
    assert_eq!(owners, vec![1, 2, 1, 2, 1]);
    assert_eq!(q.message(&id(9)).unwrap().unwrap().owner, 1);
    // Taking over from a node to itself, or to nobody, is refused.
    for to in [vec![], vec![1, 3]] {
        let r = q.apply(
            8,
            &Command::TakeOver {
                from: 3,
                to,
                at: UnixMillis(51),
            },
        );
        assert!(matches!(r, CommandResult::Rejected(Rejection::Invalid(_))));
    }
}

#[test]
fn pruning_forgets_finished_ids_and_old_traces_but_not_queued_history() {
    let mut q = MemQueue::default();
    // Three messages, ids sorting in acceptance order.
    for n in 1..=3u8 {
        q.apply(
            n as u64,
            &Command::Enqueue(Box::new(enqueue(n, 1, 1, false))),
        );
    }
    for n in [1u8, 3] {
        q.apply(
            10 + n as u64,
            &Command::Delivered {
                id: id(n),
                by: 1,
                at: UnixMillis(20),
                target: "t".into(),
                reply: "250".into(),
            },
        );
    }
    assert!(q.is_finished(&id(1)) && q.is_finished(&id(3)));
    // Cut off after every id: message 2 is still queued, so traces stop
    // there; finished ids go whatever their position.
    q.apply(
        20,
        &Command::Prune {
            before: UnixMillis(8 << 40),
        },
    );
    assert!(!q.is_finished(&id(1)) && !q.is_finished(&id(3)));
    assert!(q.trace(&id(1)).is_empty());
    assert!(
        !q.trace(&id(2)).is_empty(),
        "a queued message keeps its trace"
    );
    assert!(
        !q.trace(&id(3)).is_empty(),
        "traces after the oldest queued id stay"
    );
    // Once forgotten, a copy is accepted again (the window is the
    // configured retention, at least the queue lifetime).
    assert_eq!(
        q.apply(21, &Command::Enqueue(Box::new(enqueue(1, 1, 1, false)))),
        CommandResult::Enqueued(id(1))
    );
}

#[test]
fn a_drain_marks_the_node_and_moves_no_message() {
    let mut q = MemQueue::default();
    q.apply(1, &Command::Enqueue(Box::new(enqueue(1, 2, 1, false))));
    let drain = |drained| Command::Drain {
        node: 2,
        drained,
        by: "ops".into(),
        at: UnixMillis(10),
    };
    assert_eq!(
        q.apply(2, &drain(true)),
        CommandResult::Applied { affected: 1 }
    );
    assert!(q.drained().contains(&2));
    // The queue stays with its owner until the leader hands it on.
    assert_eq!(q.message(&id(1)).unwrap().unwrap().owner, 2);
    // Draining twice is harmless; undrain clears the mark.
    q.apply(3, &drain(true));
    assert_eq!(q.drained().len(), 1);
    q.apply(4, &drain(false));
    assert!(q.drained().is_empty());
}
