//! MX delivery with three real `relayd` processes: domains with no route
//! (and no default route) go where DNS says. The name server is a
//! `TestDns` on loopback that each test programs; the mail servers are
//! `TestTarget`s on 127.0.0.2…, all on one port (`delivery.dns.mx_port`),
//! since an MX names a host and the port is the relay's.
//!
//! Outcomes are checked at the targets (bytes, counts), in the replicated
//! queue, in the delivery log and on `/metrics`; never by waiting a fixed
//! time.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use relay_testkit::{ReceivedMessage, TargetOptions, TestDns, TestTarget, wait_for};
use relay_tests::smtp::send_mail;
use relay_tests::{ClusterOptions, ProcessCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LONG: Duration = Duration::from_secs(60);

/// One cluster at a time: three processes each on two shared cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A tier whose DNS is `dns`, with MX targets on `port`; retries after 1 s.
async fn start(dns: &TestDns, port: u16) -> (ProcessCluster, u64) {
    let cluster = ProcessCluster::start(ClusterOptions {
        min_backoff: "1s".into(),
        delivery_extra: format!(
            "max_backoff = \"2s\"\n\
             dns.nameservers = [\"{}\"]\n\
             dns.timeout = \"1s\"\n\
             dns.mx_port = {port}\n",
            dns.addr()
        ),
        ..Default::default()
    })
    .expect("start cluster");
    let leader = cluster
        .wait_for_leader(LONG, None)
        .await
        .expect("a leader is elected");
    (cluster, leader)
}

/// A target on `127.0.0.<last>:port`.
async fn target_at(last: u8, port: u16) -> TestTarget {
    TestTarget::start_with(TargetOptions {
        listen: SocketAddr::from(([127, 0, 0, last], port)),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("target on 127.0.0.{last}:{port}: {e}"))
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn message(to: &str, marker: &str) -> Vec<u8> {
    format!("From: <s@sender.test>\r\nTo: <{to}>\r\nSubject: {marker}\r\n\r\nbody of {marker}\r\n")
        .into_bytes()
}

/// Submits one message to node `leader` and expects it queued.
async fn send_ok(cluster: &ProcessCluster, leader: u64, to: &str, marker: &str) {
    let reply = send_mail(
        cluster.smtp_addr(leader),
        "s@sender.test",
        &[to],
        &message(to, marker),
    )
    .await
    .expect("SMTP session");
    assert_eq!(reply.code, 250, "{marker}: {reply}");
}

fn with_marker(messages: &[ReceivedMessage], marker: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.data.windows(marker.len()).any(|w| w == marker.as_bytes()))
        .count()
}

/// The first `maillog` line on any node containing every needle.
async fn maillog_line(cluster: &ProcessCluster, needles: &[&str]) -> String {
    wait_for(LONG, || async {
        (1..=3).find_map(|n| {
            cluster
                .log(n)
                .lines()
                .find(|l| l.contains(" maillog: ") && needles.iter().all(|x| l.contains(x)))
                .map(str::to_string)
        })
    })
    .await
    .unwrap_or_else(|e| panic!("no maillog line with {needles:?}: {e}"))
}

/// `relay_dns_lookups_total{result="<result>"}` summed over the nodes.
async fn dns_lookups(cluster: &ProcessCluster, result: &str) -> u64 {
    let series = format!("relay_dns_lookups_total{{result=\"{result}\"}} ");
    let mut total = 0;
    for id in 1..=3 {
        let page = scrape(cluster.node(id).ports.http).await;
        total += page
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    total
}

async fn scrape(port: u16) -> String {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await?;
        std::io::Result::Ok(raw)
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .expect("scrape in time")
        .expect("scrape")
}

/// MX 10 is down (nothing listens), MX 20 is up: the message goes to MX 20.
/// Then MX 10 comes up: the next message goes there. One MX query for
/// both messages: the answer is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_hosts_are_tried_by_preference() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let port = relay_tests::free_ports(1)[0];
    let dns = TestDns::start().await.expect("dns");
    dns.set_mx(
        "pref.test",
        &[(20, "mx20.pref.test"), (10, "mx10.pref.test")],
    );
    dns.set_addresses("mx10.pref.test", &[ip(2)]);
    dns.set_addresses("mx20.pref.test", &[ip(3)]);
    let mx20 = target_at(3, port).await;
    let (cluster, leader) = start(&dns, port).await;

    send_ok(&cluster, leader, "r@pref.test", "while-mx10-is-down").await;
    let got = mx20.wait_for_messages(1, LONG).await.expect("at MX 20");
    assert_eq!(got[0].rcpt_to, vec!["r@pref.test"]);
    assert_eq!(with_marker(&got, "while-mx10-is-down"), 1);
    cluster.wait_drained(LONG).await.expect("drained");
    let line = maillog_line(&cluster, &["to=<r@pref.test>", "status=sent"]).await;
    assert!(
        line.contains(&format!("relay=127.0.0.3[127.0.0.3]:{port}")),
        "{line}"
    );

    let mx10 = target_at(2, port).await;
    send_ok(&cluster, leader, "r@pref.test", "both-up").await;
    let got = mx10.wait_for_messages(1, LONG).await.expect("at MX 10");
    assert_eq!(with_marker(&got, "both-up"), 1);
    cluster.wait_drained(LONG).await.expect("drained");
    assert_eq!(mx20.accepted_count(), 1, "MX 20 got only the first");
    assert_eq!(mx10.accepted_count(), 1);
    assert_eq!(dns.queries("pref.test"), 1, "the MX answer was cached");
    assert_eq!(dns_lookups(&cluster, "mx").await, 1);
}

/// No MX records: the domain's own address is the mail host (RFC 5321
/// §5.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mx_the_domain_address_is_used() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let port = relay_tests::free_ports(1)[0];
    let dns = TestDns::start().await.expect("dns");
    dns.set_addresses("plain.test", &[ip(4)]);
    let host = target_at(4, port).await;
    let (cluster, leader) = start(&dns, port).await;

    send_ok(&cluster, leader, "r@plain.test", "implicit-mx").await;
    let got = host.wait_for_messages(1, LONG).await.expect("delivered");
    assert_eq!(got[0].rcpt_to, vec!["r@plain.test"]);
    assert_eq!(with_marker(&got, "implicit-mx"), 1);
    cluster.wait_drained(LONG).await.expect("drained");
    assert_eq!(dns_lookups(&cluster, "implicit_mx").await, 1);
}

/// A null MX bounces at once: no connection anywhere for the recipient,
/// one DSN (5.1.10) to the sender, whose domain has an MX of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_mx_bounces_at_once() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let port = relay_tests::free_ports(1)[0];
    let dns = TestDns::start().await.expect("dns");
    dns.set_null_mx("null.test");
    dns.set_mx("sender.test", &[(10, "mx.sender.test")]);
    dns.set_addresses("mx.sender.test", &[ip(5)]);
    let senders = target_at(5, port).await;
    let (cluster, leader) = start(&dns, port).await;

    send_ok(&cluster, leader, "r@null.test", "to-a-null-mx").await;
    let dsn = senders.wait_for_messages(1, LONG).await.expect("a DSN");
    assert_eq!(dsn[0].mail_from, "", "a DSN has the null reverse path");
    assert_eq!(dsn[0].rcpt_to, vec!["s@sender.test"]);
    let text = String::from_utf8_lossy(&dsn[0].data);
    assert!(text.contains("Status: 5.1.10\r\n"), "{text}");
    assert!(text.contains("recipient address has null MX"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; r@null.test"),
        "{text}"
    );
    cluster.wait_drained(LONG).await.expect("drained");

    let line = maillog_line(&cluster, &["to=<r@null.test>"]).await;
    assert!(line.contains("relay=none"), "no delivery attempt: {line}");
    assert!(line.contains("dsn=5.1.10"), "{line}");
    assert!(line.contains("status=bounced"), "{line}");
    assert_eq!(senders.accepted_count(), 1, "exactly one DSN");
    // Only the MX query: nothing asked for a host to connect to.
    assert_eq!(dns.queries("null.test"), 1);
    assert_eq!(dns_lookups(&cluster, "null_mx").await, 1);
}

/// SERVFAIL defers: the message stays queued (4.4.3) and nothing is sent;
/// once the name server answers, the retry delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_failure_defers_until_dns_answers() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let port = relay_tests::free_ports(1)[0];
    let dns = TestDns::start().await.expect("dns");
    dns.set_mx("flaky.test", &[(10, "mx.flaky.test")]);
    dns.set_addresses("mx.flaky.test", &[ip(6)]);
    dns.set_servfail("flaky.test", true);
    let host = target_at(6, port).await;
    let (cluster, leader) = start(&dns, port).await;

    send_ok(&cluster, leader, "r@flaky.test", "after-servfail").await;
    let line = maillog_line(&cluster, &["to=<r@flaky.test>", "status=deferred"]).await;
    assert!(line.contains("dsn=4.4.3"), "{line}");
    let status = cluster.status(leader, false).await.expect("status");
    let queue = status.queue.expect("queue counts");
    assert_eq!(queue.queued + queue.deferred, 1, "still queued: {queue:?}");
    assert_eq!(host.connection_count(), 0, "nothing sent while DNS fails");
    assert!(dns_lookups(&cluster, "temporary").await >= 1);

    dns.set_servfail("flaky.test", false);
    let got = host
        .wait_for_messages(1, LONG)
        .await
        .expect("delivered once DNS answers");
    assert_eq!(with_marker(&got, "after-servfail"), 1);
    cluster.wait_drained(LONG).await.expect("drained");
    assert_eq!(host.accepted_count(), 1);
}
