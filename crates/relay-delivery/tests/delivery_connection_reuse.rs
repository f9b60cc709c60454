//! Connection reuse towards a real SMTP target (`relay_testkit::TestTarget`):
//! many messages over few sessions with `RSET` between, a session the
//! target closed while idle replaced without loss, the per-session message
//! limit, idle expiry, TLS kept across reuse, and sessions with an unclear
//! end never reused.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use relay_delivery::connection_cache::{CacheSettings, CacheStats, ConnectionCache};
use relay_delivery::transport::{
    self, BoxFuture, NoFencing, SessionGate, Transaction, TransportSettings,
};
use relay_testkit::{Behaviour, ReceivedMessage, TargetOptions, TestTarget, wait_until};
use relay_types::{Command, Route, TlsPolicy};
use support::{FakeCluster, WAIT, config, message, reports_for};

/// Limits that never expire during a test (so reuse does not depend on
/// the machine's speed).
fn long_lived(max_messages: u32) -> CacheSettings {
    CacheSettings {
        idle_timeout: Duration::from_secs(60),
        reuse_time_limit: Duration::from_secs(600),
        max_messages,
    }
}

fn body(n: usize) -> String {
    format!(
        "Subject: message {n}\r\nMessage-ID: <{n}@client.test>\r\n\r\nbody of {n}\r\n.dot line\r\n"
    )
}

/// Messages per client connection (keyed by the client's port), in the
/// order the connections were first seen.
fn messages_per_connection(messages: &[ReceivedMessage]) -> Vec<usize> {
    let mut per: BTreeMap<u64, (u16, usize)> = BTreeMap::new();
    let mut first_seen: std::collections::HashMap<u16, u64> = Default::default();
    for m in messages {
        let key = *first_seen.entry(m.peer.port()).or_insert(m.seq);
        per.entry(key).or_insert((m.peer.port(), 0)).1 += 1;
    }
    per.values().map(|(_, n)| *n).collect()
}

/// Every body arrived exactly once, byte for byte.
fn assert_each_once(messages: &[ReceivedMessage], n: usize) {
    assert_eq!(messages.len(), n, "messages at the target");
    let mut seen = HashSet::new();
    for m in messages {
        let text = String::from_utf8(m.data.to_vec()).expect("utf-8 body");
        let k: usize = text
            .strip_prefix("Subject: message ")
            .and_then(|t| t.split("\r\n").next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("unexpected body {text:?}"));
        assert_eq!(text, body(k), "bytes at the target == body {k}");
        assert!(seen.insert(k), "message {k} delivered twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_travel_over_few_connections() {
    const N: usize = 60;
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let ids: Vec<_> = (0..N)
        .map(|n| cluster.enqueue(message("s@sender.test", &["a@example.test"], &body(n))))
        .collect();

    let mut cfg = config();
    cfg.per_target_concurrency = 5;
    cfg.connection_cache = long_lived(100);
    let running = support::Running::start(&cluster, cfg);
    let received = target.wait_for_messages(N, WAIT).await.expect("delivered");
    wait_until(WAIT, || ids.iter().all(|id| cluster.record(id).is_none()))
        .await
        .expect("every message removed after Delivered");
    running.stop().await;

    assert_each_once(&received, N);
    for id in &ids {
        let reports = reports_for(&cluster, *id);
        assert!(
            matches!(reports.as_slice(), [Command::Delivered { .. }]),
            "{reports:?}"
        );
    }
    let per = messages_per_connection(&received);
    println!(
        "{N} messages over {} connections: {per:?}",
        target.connection_count()
    );
    // At most one session per concurrent delivery to the target.
    assert!(
        target.connection_count() <= 5,
        "{} connections for {N} messages",
        target.connection_count()
    );
    assert!(
        per.iter().any(|&n| n > 1),
        "no connection carried two messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_target_closed_while_idle_is_replaced_without_loss() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let mut cfg = config();
    cfg.connection_cache = long_lived(100);
    let running = support::Running::start(&cluster, cfg);

    let first = cluster.enqueue(message("s@sender.test", &["a@example.test"], &body(1)));
    target.wait_for_messages(1, WAIT).await.expect("first");
    wait_until(WAIT, || cluster.record(&first).is_none())
        .await
        .expect("first removed");
    // The session stays open, cached for the next message.
    wait_until(WAIT, || target.open_connection_count() == 1)
        .await
        .expect("the session is kept open after the message");

    // The target times the idle session out.
    target.close_idle_connections();
    wait_until(WAIT, || target.open_connection_count() == 0)
        .await
        .expect("target closed the idle session");

    let second = cluster.enqueue(message("s@sender.test", &["a@example.test"], &body(2)));
    let received = target.wait_for_messages(2, WAIT).await.expect("second");
    wait_until(WAIT, || cluster.record(&second).is_none())
        .await
        .expect("second removed");
    running.stop().await;

    assert_each_once(&received, 2);
    let reports = reports_for(&cluster, second);
    assert!(
        matches!(reports.as_slice(), [Command::Delivered { .. }]),
        "delivered on its first attempt, not deferred: {reports:?}"
    );
    assert_eq!(
        target.connection_count(),
        2,
        "one fresh session replaced it"
    );
}

fn route(target: &TestTarget, tls: TlsPolicy) -> Route {
    Route::new(vec![target.target()], tls)
}

fn settings() -> TransportSettings {
    TransportSettings {
        hostname: "relay1.test".into(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        extra_root_certificates_pem: Vec::new(),
    }
}

/// Sends message `n` over `cache`; `Some(reply)` of the one recipient.
async fn send(
    route: &Route,
    cache: &ConnectionCache,
    settings: &TransportSettings,
    gate: &dyn SessionGate,
    text: &str,
) -> Option<String> {
    let tx = Transaction {
        reverse_path: "s@sender.test",
        recipients: vec![(0, "a@example.test")],
        body: text.as_bytes(),
        smtputf8: false,
        eight_bit: false,
    };
    let results = transport::send_cached(route, &tx, settings, gate, cache).await?;
    assert_eq!(results.len(), 1);
    Some(results[0].result.reply.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_limit_per_connection_opens_a_new_one() {
    let target = TestTarget::start().await.expect("target");
    let route = route(&target, TlsPolicy::None);
    let cache = ConnectionCache::new(long_lived(3));
    for n in 0..7 {
        let reply = send(&route, &cache, &settings(), &NoFencing, &body(n))
            .await
            .expect("sent");
        assert!(reply.starts_with("250 "), "{reply}");
    }
    let received = target.messages();
    assert_each_once(&received, 7);
    let per = messages_per_connection(&received);
    println!(
        "7 messages, limit 3: {} connections {per:?}, {:?}",
        target.connection_count(),
        cache.stats()
    );
    assert_eq!(per, vec![3, 3, 1]);
    assert_eq!(target.connection_count(), 3);
    let stats = cache.stats();
    assert_eq!((stats.opened, stats.reused, stats.stale), (3, 4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_close_after_the_idle_timeout() {
    let target = TestTarget::start().await.expect("target");
    let route = route(&target, TlsPolicy::None);
    let cache = ConnectionCache::new(CacheSettings {
        idle_timeout: Duration::from_millis(200),
        ..long_lived(100)
    });
    send(&route, &cache, &settings(), &NoFencing, &body(1))
        .await
        .expect("sent");
    assert_eq!(cache.stats().idle, 1);
    // What the delivery loop does every round.
    let deadline = tokio::time::Instant::now() + WAIT;
    while cache.stats().idle > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        cache.close_expired(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until(WAIT, || target.open_connection_count() == 0)
        .await
        .expect("the expired session was closed");
    send(&route, &cache, &settings(), &NoFencing, &body(2))
        .await
        .expect("sent");
    assert_eq!(target.connection_count(), 2);
    assert_eq!(cache.stats().reused, 0);
    assert_each_once(&target.messages(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_stays_up_across_reuse() {
    let target = TestTarget::start_with(TargetOptions {
        starttls: true,
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let route = route(&target, TlsPolicy::Opportunistic);
    let cache = ConnectionCache::new(long_lived(100));
    for n in 0..3 {
        send(&route, &cache, &settings(), &NoFencing, &body(n))
            .await
            .expect("sent");
    }
    let received = target.messages();
    assert_each_once(&received, 3);
    assert!(received.iter().all(|m| m.tls), "every message over TLS");
    assert_eq!(target.connection_count(), 1);
    assert_eq!(cache.stats().reused, 2);
}

/// A gate with switches.
struct Gate {
    start: bool,
    confirm: bool,
}

impl SessionGate for Gate {
    fn may_start(&self) -> bool {
        self.start
    }

    fn confirm_since(&self, _since: std::time::Instant) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(self.confirm))
    }
}

fn idle(cache: &ConnectionCache) -> usize {
    let CacheStats { idle, .. } = cache.stats();
    idle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_apply_on_a_reused_connection_and_unclear_endings_are_not_reused() {
    let target = TestTarget::start().await.expect("target");
    let route = route(&target, TlsPolicy::None);
    let cache = ConnectionCache::new(long_lived(100));
    let mut settings = settings();
    settings.data_timeout = Duration::from_millis(300);

    send(&route, &cache, &settings, &NoFencing, &body(1))
        .await
        .expect("sent");
    assert_eq!(idle(&cache), 1);

    // The start lease is gone: nothing is sent on the cached session, and
    // it is closed rather than kept.
    let closed = Gate {
        start: false,
        confirm: true,
    };
    assert_eq!(
        send(&route, &cache, &settings, &closed, &body(2)).await,
        None
    );
    assert_eq!(idle(&cache), 0);
    assert_eq!(cache.stats().reused, 1);

    // The gate before the text closes on a reused session: the text never
    // goes out, and the session (inside DATA) is dropped.
    send(&route, &cache, &settings, &NoFencing, &body(3))
        .await
        .expect("sent");
    send(&route, &cache, &settings, &NoFencing, &body(4))
        .await
        .expect("sent");
    let before = target.connection_count();
    assert_eq!(idle(&cache), 1);
    let unconfirmed = Gate {
        start: true,
        confirm: false,
    };
    assert_eq!(
        send(&route, &cache, &settings, &unconfirmed, &body(5)).await,
        None
    );
    assert_eq!(idle(&cache), 0, "a session stopped inside DATA is not kept");
    assert_eq!(target.connection_count(), before, "it was a reused session");

    // No reply to the final dot in time: the target may still answer it
    // later, so the session must not carry the next message.
    target.set_behaviour(Behaviour::DelayDataReply(Duration::from_secs(2)));
    let reply = send(&route, &cache, &settings, &NoFencing, &body(6))
        .await
        .expect("sent");
    assert!(transport::is_lost_final_reply(&reply), "{reply}");
    assert_eq!(idle(&cache), 0, "a session with a lost reply is not kept");
    target.set_behaviour(Behaviour::AcceptAll);
    let opened = cache.stats().opened;
    let reply = send(&route, &cache, &settings, &NoFencing, &body(7))
        .await
        .expect("sent");
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(cache.stats().opened, opened + 1, "a fresh session");

    // Accepted: 1, 3, 4, 6 (stored before the late reply), 7; never 2 or 5.
    let mut got: Vec<String> = target
        .messages()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = [1, 3, 4, 6, 7].iter().map(|&n| body(n)).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_cached_session_is_found_by_rset_and_counted_stale() {
    let target = TestTarget::start().await.expect("target");
    let route = route(&target, TlsPolicy::None);
    let cache = ConnectionCache::new(long_lived(100));
    send(&route, &cache, &settings(), &NoFencing, &body(1))
        .await
        .expect("sent");
    target.close_idle_connections();
    wait_until(WAIT, || target.open_connection_count() == 0)
        .await
        .expect("target closed the idle session");
    let reply = send(&route, &cache, &settings(), &NoFencing, &body(2))
        .await
        .expect("sent");
    assert!(reply.starts_with("250 "), "{reply}");
    let stats = cache.stats();
    assert_eq!((stats.opened, stats.reused, stats.stale), (2, 0, 1));
    assert_each_once(&target.messages(), 2);
}
