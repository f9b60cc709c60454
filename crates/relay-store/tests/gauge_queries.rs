//! The queries behind the node's queue-age and store-size gauges:
//! `oldest` follows the message table's first key as messages come and go,
//! and `stored_bytes` reports something once anything is written.

mod common;

use common::{apply_one, enqueue, id, membership, normal};
use relay_types::{Command, UnixMillis};
use tempfile::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_tracks_the_earliest_queued_message() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm) = relay_store::open(dir.path()).unwrap();
    assert_eq!(sm.oldest().unwrap(), None);

    apply_one(&mut sm, membership(1, &[1, 2, 3])).await;
    // Applied out of id order: the oldest is the smallest id, not the first applied.
    for (index, n) in [(2, 3u8), (3, 1), (4, 2)] {
        apply_one(
            &mut sm,
            normal(index, Command::Enqueue(Box::new(enqueue(n, 1, 1, false)))),
        )
        .await;
    }
    let oldest = sm.oldest().unwrap().expect("a message");
    assert_eq!(oldest.id, id(1));
    assert_eq!(oldest.received_at, UnixMillis(1_001));

    apply_one(
        &mut sm,
        normal(
            5,
            Command::Delivered {
                id: id(1),
                by: 1,
                at: UnixMillis(2_000),
                target: "127.0.0.1:25".into(),
                reply: "250 ok".into(),
            },
        ),
    )
    .await;
    assert_eq!(sm.oldest().unwrap().expect("a message").id, id(2));
    assert!(sm.stored_bytes().unwrap() > 0);
}
