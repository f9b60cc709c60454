//! Writes the binary seeds of `log_entry` and `admin_request` with the real
//! encoders: `cargo run --example make_seeds --features node` (from `fuzz/`,
//! with ROCKSDB_LIB_DIR/ROCKSDB_STATIC set). The text seeds come from
//! `make-seeds.py`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};
use prost::Message;
use relay_proto::admin as pb;
use relay_queue::{MemQueue, QueueRead, body_checksum};
use relay_store::TypeConfig;
use relay_types::{
    AdminAction, AttemptOutcome, BodyType, Command, DsnNotify, DsnRet, Enqueue, Envelope,
    MessageFilter, MessageId, MessageInfo, Recipient, RecipientOutcome, Route, Selector, TlsPolicy,
    UnixMillis, encode,
};

fn write(target: &str, name: &str, selector: u8, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = vec![selector];
    data.extend_from_slice(bytes);
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

fn enqueue(id: MessageId) -> Enqueue {
    let body = Bytes::from_static(
        b"Received: from c.example ([192.0.2.1])\r\n\tby mx.test (quorum-relay) with ESMTP;\r\n\
          \tSun, 29 Nov 2026 16:00:00 +0000\r\nSubject: hi\r\n\r\nhello\r\n",
    );
    Enqueue {
        id,
        received_at: UnixMillis(1_764_432_000_000),
        accepted_by: 1,
        owner: 1,
        envelope: Envelope {
            reverse_path: "alice@c.example".into(),
            recipients: vec![
                Recipient::new("bob@example.test"),
                Recipient {
                    address: "carol@example.test".into(),
                    orcpt: Some("rfc822;carol+40example.test".into()),
                    notify: DsnNotify {
                        never: false,
                        success: true,
                        failure: true,
                        delay: false,
                    },
                },
            ],
            declared_size: Some(120),
            body_type: BodyType::EightBitMime,
            smtputf8: false,
            envid: Some("QQ314159".into()),
            ret: Some(DsnRet::Headers),
            helo: "c.example".into(),
            client_addr: "192.0.2.1:40000".into(),
            auth_user: None,
        },
        info: MessageInfo {
            message_id_header: Some("<1@c.example>".into()),
            subject: Some("hi".into()),
            size: body.len() as u64,
        },
        checksum: body_checksum(&body),
        expires_at: UnixMillis(1_764_864_000_000),
        body,
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn main() {
    let id: MessageId = "0193b2c4d5e67f8091a2b3c4d5e6f708".parse().unwrap();
    let commands = vec![
        Command::Enqueue(Box::new(enqueue(id))),
        Command::Attempt {
            id,
            by: 1,
            at: UnixMillis(1_764_432_060_000),
            target: "127.0.0.1:2600".into(),
            outcomes: vec![RecipientOutcome {
                index: 0,
                outcome: AttemptOutcome::Deferred,
                reply: "451 4.3.0 try later".into(),
            }],
            next_attempt_at: UnixMillis(1_764_432_360_000),
            dsn: None,
        },
        Command::Reassign {
            selector: Selector::Filter(MessageFilter {
                owner: Some(1),
                ..Default::default()
            }),
            to: 2,
            at: UnixMillis(1_764_432_100_000),
        },
        Command::Admin {
            action: AdminAction::Hold,
            selector: Selector::Ids(vec![id]),
            by: "ops".into(),
            reason: "looking".into(),
            at: UnixMillis(1_764_432_200_000),
        },
        Command::Admin {
            action: AdminAction::Release,
            selector: Selector::Filter(MessageFilter::default()),
            by: "ops".into(),
            reason: "done".into(),
            at: UnixMillis(1_764_432_300_000),
        },
        Command::Delivered {
            id,
            by: 2,
            at: UnixMillis(1_764_432_400_000),
            target: "127.0.0.1:2600".into(),
            reply: "250 2.0.0 Ok".into(),
        },
        Command::SetRoute {
            domain: "example.test".into(),
            route: Route::new(vec!["127.0.0.1:2600".into()], TlsPolicy::Required),
        },
        Command::RemoveRoute {
            domain: "example.test".into(),
        },
    ];

    // log_entry, selector 1: command sequences.
    write("log_entry", "commands-all", 1, &encode(&commands));
    for (i, c) in commands.iter().enumerate() {
        write(
            "log_entry",
            &format!("command-{i}"),
            1,
            &encode(&vec![c.clone()]),
        );
    }
    // Selector 0: raft_log values.
    let membership = Membership::<u64, BasicNode>::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([
            (1, BasicNode::new("127.0.0.1:7101")),
            (2, BasicNode::new("127.0.0.1:7102")),
            (3, BasicNode::new("127.0.0.1:7103")),
        ]),
    );
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(membership.clone()),
        },
        Entry {
            log_id: log_id(1, 3),
            payload: EntryPayload::Normal(commands[0].clone()),
        },
        Entry {
            log_id: log_id(2, 4),
            payload: EntryPayload::Normal(commands[1].clone()),
        },
    ];
    for (i, e) in entries.iter().enumerate() {
        write("log_entry", &format!("entry-{i}"), 0, &encode(e));
    }
    // Selectors 2-4: Raft RPCs.
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(1, 1)),
        entries: entries[1..].to_vec(),
        leader_commit: Some(log_id(1, 2)),
    };
    write("log_entry", "append-entries", 2, &encode(&append));
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(2, 4)),
        entries: Vec::new(),
        leader_commit: Some(log_id(2, 4)),
    };
    write("log_entry", "heartbeat", 2, &encode(&heartbeat));
    let vote = VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 4)));
    write("log_entry", "vote", 3, &encode(&vote));
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 4)),
            last_membership: StoredMembership::new(Some(log_id(1, 2)), membership),
            snapshot_id: "2-4-1".into(),
        },
        offset: 0,
        data: b"not a real snapshot".to_vec(),
        done: true,
    };
    write("log_entry", "install-snapshot", 4, &encode(&snapshot));
    // Selector 5: a stored message record.
    let mut q = MemQueue::default();
    q.apply(3, &commands[0]);
    q.apply(4, &commands[1]);
    let record = q.message(&id).unwrap().expect("enqueued");
    write("log_entry", "record", 5, &encode(&record));

    // admin_request: [selector, prost message].
    let filter = pb::QueueFilter {
        state: Some("deferred".into()),
        to_domain: Some("Example.TEST.".into()),
        from: Some("alice@c.example".into()),
        older_than_ms: Some(60_000),
        owner: Some(2),
    };
    let action = pb::QueueActionRequest {
        action: "hold".into(),
        ids: vec![id.to_string()],
        filter: None,
        all: false,
        by: "ops".into(),
        reason: "looking".into(),
    };
    write(
        "admin_request",
        "queue-hold-ids",
        0,
        &action.encode_to_vec(),
    );
    let action = pb::QueueActionRequest {
        action: "flush".into(),
        ids: Vec::new(),
        filter: Some(filter.clone()),
        all: true,
        by: String::new(),
        reason: String::new(),
    };
    write(
        "admin_request",
        "queue-flush-all",
        0,
        &action.encode_to_vec(),
    );
    let list = pb::ListQueueRequest {
        filter: Some(filter),
        limit: 10,
    };
    write("admin_request", "list", 1, &list.encode_to_vec());
    let show = pb::MessageRequest { id: id.to_string() };
    write("admin_request", "show", 2, &show.encode_to_vec());
    let set = pb::SetRouteRequest {
        route: Some(pb::RouteInfo {
            domain: "Example.TEST".into(),
            targets: vec![
                "mx1.example.test:25".into(),
                "[2001:db8::1]:2525".into(),
                "192.0.2.7".into(),
            ],
            tls: "required".into(),
            concurrency: 6,
            rate: "20/s".into(),
        }),
        by: "ops".into(),
    };
    write("admin_request", "set-route", 3, &set.encode_to_vec());
    let remove = pb::RemoveRouteRequest {
        domain: "example.test.".into(),
    };
    write("admin_request", "remove-route", 4, &remove.encode_to_vec());
    for (action, addr) in [("add", "127.0.0.1:7104"), ("promote", ""), ("remove", "")] {
        let m = pb::MembershipRequest {
            action: action.into(),
            id: 4,
            addr: addr.into(),
        };
        write(
            "admin_request",
            &format!("member-{action}"),
            5,
            &m.encode_to_vec(),
        );
    }
    let failover = pb::FailoverRequest { to: Some(2) };
    write("admin_request", "failover", 6, &failover.encode_to_vec());
    write(
        "admin_request",
        "status",
        7,
        &pb::StatusRequest {}.encode_to_vec(),
    );
}
