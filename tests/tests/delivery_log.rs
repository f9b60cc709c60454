//! The delivery log ("maillog"): three real `relayd` processes relay one
//! message to a target that accepts, one to a target that answers 451 and
//! one to a target that answers 550; each node's log (text format) must
//! carry Postfix's fields for the acceptance and for every recipient's
//! outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use relay_testkit::{Behaviour, Reply, TestTarget};
use relay_tests::smtp::send_mail;
use relay_tests::{ClusterOptions, ProcessCluster};
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(30);

/// The `key=value` fields of a `maillog` line; `status` (last, may hold
/// spaces) is everything after ` status=`.
fn fields(line: &str) -> BTreeMap<String, String> {
    let rest = line.split_once("maillog: ").map_or("", |(_, r)| r);
    let (head, status) = match rest.split_once(" status=") {
        Some((h, s)) => (h, Some(s)),
        None => (rest, None),
    };
    let mut out: BTreeMap<String, String> = head
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(s) = status {
        out.insert("status".into(), s.trim_end().to_string());
    }
    out
}

/// The `maillog` lines of every node that name `queue_id` and contain
/// `needle`, parsed.
fn lines(cluster: &ProcessCluster, queue_id: &str, needle: &str) -> Vec<BTreeMap<String, String>> {
    (1..=3)
        .flat_map(|n| {
            cluster
                .log(n)
                .lines()
                .filter(|l| l.contains(" maillog: ") && l.contains(needle))
                .map(fields)
                .filter(|f| f.get("queue_id").map(String::as_str) == Some(queue_id))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits for exactly one line of `queue_id` containing `needle`.
async fn one_line(
    cluster: &ProcessCluster,
    queue_id: &str,
    needle: &str,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let found = lines(cluster, queue_id, needle);
        if let [only] = found.as_slice() {
            return only.clone();
        }
        assert!(
            found.len() < 2,
            "more than one line for {queue_id} {needle}: {found:?}"
        );
        assert!(
            Instant::now() < deadline,
            "no maillog line for {queue_id} with {needle:?}; node 1 log:\n{}",
            cluster.log(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `delay` has one decimal; `delays` is four numbers with two.
fn check_delays(f: &BTreeMap<String, String>) {
    let delay = &f["delay"];
    let (whole, frac) = delay.split_once('.').expect("delay has a decimal point");
    assert!(
        whole.parse::<u64>().is_ok() && frac.len() == 1,
        "delay={delay}"
    );
    let parts: Vec<&str> = f["delays"].split('/').collect();
    assert_eq!(parts.len(), 4, "delays={}", f["delays"]);
    for p in parts {
        let (whole, frac) = p.split_once('.').expect("two decimals");
        assert!(
            whole.parse::<u64>().is_ok() && frac.len() == 2,
            "delays={}",
            f["delays"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acceptance_and_recipient_outcome_is_one_maillog_line() {
    let ok = TestTarget::start().await.expect("target");
    let temp = TestTarget::start().await.expect("target");
    temp.set_behaviour(Behaviour::RejectRcpt(Reply::temporary()));
    let perm = TestTarget::start().await.expect("target");
    perm.set_behaviour(Behaviour::RejectRcpt(Reply::permanent()));
    let cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![
            ("sent.test".into(), ok.target()),
            ("later.test".into(), temp.target()),
            ("gone.test".into(), perm.target()),
        ],
        ..Default::default()
    })
    .expect("start cluster");
    cluster.wait_for_leader(WITHIN, None).await.expect("leader");

    // Node 1 relays for the domains once its replica has the routes.
    let smtp = cluster.smtp_addr(1);
    let mut ids = BTreeMap::new();
    for (domain, n) in [("sent.test", 1), ("later.test", 2), ("gone.test", 3)] {
        let to = format!("rcpt{n}@{domain}");
        let message =
            format!("From: <s@sender.test>\r\nTo: <{to}>\r\nSubject: log {n}\r\n\r\nbody {n}\r\n");
        let deadline = Instant::now() + WITHIN;
        let reply = loop {
            let reply = send_mail(smtp, "s@sender.test", &[&to], message.as_bytes())
                .await
                .expect("SMTP");
            if reply.code == 250 || Instant::now() >= deadline {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(reply.code, 250, "{reply}");
        ids.insert(
            domain,
            (reply.queued_id().expect("queue id"), to, message.len()),
        );
    }

    for (domain, (id, to, len)) in &ids {
        // The acceptance: from, size (with our Received: header), nrcpt,
        // client.
        let accepted = one_line(&cluster, id, "message accepted").await;
        assert_eq!(
            accepted["from"], "<s@sender.test>",
            "{domain}: {accepted:?}"
        );
        assert_eq!(accepted["nrcpt"], "1");
        assert_eq!(accepted["client"], "unknown[127.0.0.1]");
        let size: usize = accepted["size"].parse().expect("size");
        assert!(size > *len, "size {size} counts the message and our header");

        let port = match *domain {
            "sent.test" => ok.addr().port(),
            "later.test" => temp.addr().port(),
            _ => perm.addr().port(),
        };
        let outcome = one_line(&cluster, id, &format!("to=<{to}>")).await;
        assert_eq!(
            outcome["relay"],
            format!("127.0.0.1[127.0.0.1]:{port}"),
            "{outcome:?}"
        );
        check_delays(&outcome);
        let (dsn, status) = match *domain {
            "sent.test" => ("2.0.0", "sent (250"),
            "later.test" => (
                "4.3.0",
                "deferred (451 4.3.0 temporary failure (test target))",
            ),
            _ => ("5.1.1", "bounced (550 5.1.1 rejected (test target))"),
        };
        assert_eq!(outcome["dsn"], dsn, "{domain}: {outcome:?}");
        assert!(
            outcome["status"].starts_with(status),
            "{domain}: {outcome:?}"
        );
    }
    assert_eq!(ok.accepted_count(), 1);

    // The bounce's DSN goes back to s@sender.test, which has no route: no
    // target answers (relay=none) and it is deferred.
    let dsn_line = poll_any(&cluster, "to=<s@sender.test>").await;
    assert_eq!(dsn_line["relay"], "none", "{dsn_line:?}");
    assert_eq!(dsn_line["dsn"], "4.0.0", "{dsn_line:?}");
    assert!(
        dsn_line["status"].starts_with("deferred (no route"),
        "{dsn_line:?}"
    );
    check_delays(&dsn_line);
}

/// The first `maillog` line of any node containing `needle`, parsed.
async fn poll_any(cluster: &ProcessCluster, needle: &str) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let found = (1..=3).find_map(|n| {
            cluster
                .log(n)
                .lines()
                .find(|l| l.contains(" maillog: ") && l.contains(needle))
                .map(fields)
        });
        if let Some(f) = found {
            return f;
        }
        assert!(Instant::now() < deadline, "no maillog line with {needle:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
