//! The relay path end to end, with three real `relayd` processes and real
//! SMTP on both sides: a client submits over TCP, the message is committed
//! through Raft, the owner forwards it to a controllable test target, and the
//! copies are deleted everywhere once the target confirms.
//!
//! Every "it was delivered once and then deleted" claim is checked through
//! the replicated state of every node (`wait_drained`: queue counts zero, no
//! stored bodies, equal checksums), never by waiting a fixed time.

use std::net::SocketAddr;
use std::time::Duration;

use relay_testkit::{Behaviour, ReceivedMessage, Reply, TargetOptions, TestTarget};
use relay_tests::smtp::{SmtpClient, dot_stuff, send_mail};
use relay_tests::{ClusterOptions, ProcessCluster};

const LONG: Duration = Duration::from_secs(60);

/// The message as the target received it, minus the `Received:` header the
/// relay prepended (the only change a relay may make).
fn without_received(data: &[u8]) -> &[u8] {
    assert!(
        data.starts_with(b"Received: "),
        "no Received header first: {:?}",
        String::from_utf8_lossy(&data[..data.len().min(200)])
    );
    // The header is folded: it ends at the first line not starting with
    // whitespace.
    let mut pos = 0;
    loop {
        let end = data[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("header line ends with CRLF")
            + pos
            + 2;
        pos = end;
        if !matches!(data.get(pos), Some(b' ') | Some(b'\t')) {
            return &data[pos..];
        }
    }
}

/// Messages at `target` whose bytes contain `marker`.
fn with_marker(messages: &[ReceivedMessage], marker: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.data.windows(marker.len()).any(|w| w == marker.as_bytes()))
        .count()
}

fn simple_message(marker: &str) -> Vec<u8> {
    format!(
        "From: <s@sender.test>\r\nTo: <r@dest.test>\r\nSubject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\nbody of {marker}\r\n"
    )
    .into_bytes()
}

async fn start_cluster(options: ClusterOptions) -> (ProcessCluster, u64) {
    let cluster = ProcessCluster::start(options).expect("start cluster");
    let leader = cluster
        .wait_for_leader(LONG, None)
        .await
        .expect("a leader is elected");
    (cluster, leader)
}

/// Sends one message and asserts it was queued.
async fn send_ok(addr: SocketAddr, from: &str, to: &[&str], message: &[u8]) -> String {
    let reply = send_mail(addr, from, to, message)
        .await
        .expect("SMTP session");
    assert_eq!(reply.code, 250, "expected 250, got {reply}");
    assert!(reply.text().starts_with("2.0.0"), "{reply}");
    reply.queued_id().expect("queue id in the 250 reply")
}

/// Byte-exact forwarding, pipelining, size limit, relay control, smuggling
/// and a DSN for a 550, all against one cluster; ends with the queue
/// drained on every node and the Raft log purged past every body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_path_is_byte_exact_and_enforces_policy() {
    let dest = TestTarget::start().await.expect("target for dest.test");
    let senders = TestTarget::start().await.expect("target for sender.test");
    dest.set_behaviour(Behaviour::RejectRcptMatching {
        matching: "bad@".into(),
        reply: Reply::new(550, "5.1.1 no such user"),
    });
    let (cluster, leader) = start_cluster(ClusterOptions {
        routes: vec![
            ("dest.test".into(), dest.target()),
            ("sender.test".into(), senders.target()),
        ],
        keep_logs: 0,
        // Loopback is not an authorised network here: only the relay
        // domains are accepted, as from an unknown client on the Internet.
        smtp_extra: "authorized_networks = []\nmax_message_size = 100000".into(),
        cluster_extra: "purge_interval = \"1s\"".into(),
        ..Default::default()
    })
    .await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let follower_addr = cluster.smtp_addr(follower);

    // 1. Byte-exact: dot-stuffed lines, 8-bit octets, a 998-octet line,
    //    submitted to a follower (committed via the leader).
    let long_line = "L".repeat(998);
    let mut exact = b"From: <s@sender.test>\r\nTo: <r@dest.test>\r\nSubject: exact\r\nMessage-ID: <exact@client.test>\r\nContent-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    exact.extend_from_slice(b".leading dot\r\n..two dots\r\n.\r\n. space\r\n");
    exact.extend_from_slice(b"caf\xe9 \xff\xfe 8-bit\r\n");
    exact.extend_from_slice(long_line.as_bytes());
    exact.extend_from_slice(b"\r\nend\r\n");
    {
        let mut client = SmtpClient::connect_ehlo(follower_addr).await.unwrap();
        let mail = client
            .command("MAIL FROM:<s@sender.test> BODY=8BITMIME")
            .await
            .unwrap();
        assert_eq!(mail.code, 250, "{mail}");
        let rcpt = client.command("RCPT TO:<r@dest.test>").await.unwrap();
        assert_eq!(rcpt.code, 250, "{rcpt}");
        let done = client.data(&exact).await.unwrap();
        assert_eq!(done.code, 250, "{done}");
        assert!(done.queued_id().is_some(), "{done}");
    }

    // 2. Pipelining (RFC 2920): a whole transaction in one write, then the
    //    end of data followed by the next transaction in the same write.
    {
        let mut client = SmtpClient::connect_ehlo(cluster.smtp_addr(leader))
            .await
            .unwrap();
        client
            .send_raw(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<p1@dest.test>\r\nRCPT TO:<p2@dest.test>\r\nDATA\r\n")
            .await
            .unwrap();
        for expected in [250, 250, 250, 354] {
            let reply = client.read_reply().await.unwrap();
            assert_eq!(reply.code, expected, "pipelined reply {reply}");
        }
        let mut batch = dot_stuff(&simple_message("pipelined-one"));
        batch.extend_from_slice(
            b".\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<p3@dest.test>\r\nDATA\r\n",
        );
        client.send_raw(&batch).await.unwrap();
        for expected in [250, 250, 250, 354] {
            let reply = client.read_reply().await.unwrap();
            assert_eq!(reply.code, expected, "pipelined reply {reply}");
        }
        let mut last = dot_stuff(&simple_message("pipelined-two"));
        last.extend_from_slice(b".\r\nQUIT\r\n");
        client.send_raw(&last).await.unwrap();
        assert_eq!(client.read_reply().await.unwrap().code, 250);
        assert_eq!(client.read_reply().await.unwrap().code, 221);
    }

    // 3. Size: refused at MAIL when declared, and during DATA when not.
    {
        let mut client = SmtpClient::connect_ehlo(follower_addr).await.unwrap();
        let mail = client
            .command("MAIL FROM:<s@sender.test> SIZE=200000")
            .await
            .unwrap();
        assert_eq!(mail.code, 552, "{mail}");
        assert!(mail.text().starts_with("5.3.4"), "{mail}");
        let mail = client.command("MAIL FROM:<s@sender.test>").await.unwrap();
        assert_eq!(mail.code, 250, "{mail}");
        let rcpt = client.command("RCPT TO:<r@dest.test>").await.unwrap();
        assert_eq!(rcpt.code, 250, "{rcpt}");
        let mut big = simple_message("oversize");
        big.extend(
            std::iter::repeat_n(b"0123456789012345678901234567890123456789\r\n", 3000).flatten(),
        );
        let reply = client.data(&big).await.unwrap();
        assert_eq!(reply.code, 552, "{reply}");
        assert!(reply.text().starts_with("5.3.4"), "{reply}");
        // The session goes on.
        assert_eq!(client.command("NOOP").await.unwrap().code, 250);
    }

    // 4. Relay control: a foreign domain from an unauthorised client.
    {
        let reply = send_mail(
            follower_addr,
            "s@sender.test",
            &["victim@foreign.test"],
            &simple_message("foreign"),
        )
        .await
        .unwrap();
        assert_eq!(reply.code, 554, "{reply}");
        assert!(reply.text().starts_with("5.7.1"), "{reply}");
    }

    // 5. Smuggling (CVE-2023-51764 family): a fake end of data with a bare
    //    LF or CR followed by a second transaction must not produce a second
    //    message; the whole thing is refused as one message.
    for (n, fake_end) in [
        &b"\n.\r\n"[..],
        b"\n.\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
    ]
    .into_iter()
    .enumerate()
    {
        let mut client = SmtpClient::connect_ehlo(follower_addr).await.unwrap();
        assert_eq!(
            client
                .command("MAIL FROM:<s@sender.test>")
                .await
                .unwrap()
                .code,
            250
        );
        assert_eq!(
            client.command("RCPT TO:<r@dest.test>").await.unwrap().code,
            250
        );
        assert_eq!(client.command("DATA").await.unwrap().code, 354);
        let mut payload = format!("Subject: carrier-{n}\r\n\r\ncarrier").into_bytes();
        payload.extend_from_slice(fake_end);
        payload.extend_from_slice(
            format!("MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nSubject: smuggled-{n}\r\n\r\nsmuggled\r\n.\r\n").as_bytes(),
        );
        client.send_raw(&payload).await.unwrap();
        let reply = client.read_reply().await.unwrap();
        assert_eq!(reply.code, 550, "smuggling variant {n}: {reply}");
        assert!(reply.text().starts_with("5.6."), "{reply}");
        // Nothing of the payload was taken as commands.
        assert_eq!(client.command("NOOP").await.unwrap().code, 250);
    }

    // 6. A permanent refusal at the target: the recipient bounces with a
    //    DSN to the sender, routed like any message (sender.test → second
    //    target); the good recipient of the same message is delivered.
    send_ok(
        follower_addr,
        "s@sender.test",
        &["bad@dest.test", "good@dest.test"],
        &simple_message("half-bounced"),
    )
    .await;

    let dsn = senders
        .wait_for_messages(1, LONG)
        .await
        .expect("a DSN reaches the sender's route");
    assert_eq!(dsn[0].mail_from, "", "DSN has the null reverse path");
    assert_eq!(dsn[0].rcpt_to, vec!["s@sender.test".to_string()]);
    let dsn_text = String::from_utf8_lossy(&dsn[0].data);
    assert!(
        dsn_text.contains("multipart/report") && dsn_text.contains("report-type=delivery-status"),
        "{dsn_text}"
    );
    assert!(dsn_text.contains("bad@dest.test"), "{dsn_text}");
    assert!(dsn_text.contains("5.1.1"), "{dsn_text}");

    // Everything settles: no node holds a message or a body.
    let applied = cluster.wait_drained(LONG).await.expect("queue drained");

    let got = dest.messages();
    // exact, pipelined-one, pipelined-two, half-bounced; nothing else.
    assert_eq!(got.len(), 4, "messages at target: {:#?}", got.len());
    let exact_got: Vec<_> = got
        .iter()
        .filter(|m| with_marker(std::slice::from_ref(m), "Subject: exact") == 1)
        .collect();
    assert_eq!(exact_got.len(), 1);
    assert_eq!(
        without_received(&exact_got[0].data),
        &exact[..],
        "forwarded bytes differ"
    );
    assert_eq!(exact_got[0].rcpt_to, vec!["r@dest.test".to_string()]);
    assert!(exact_got[0].mail_params.contains("BODY=8BITMIME"));
    assert_eq!(with_marker(&got, "pipelined-one"), 1);
    assert_eq!(with_marker(&got, "pipelined-two"), 1);
    let one = got
        .iter()
        .find(|m| with_marker(std::slice::from_ref(m), "pipelined-one") == 1)
        .unwrap();
    assert_eq!(one.rcpt_to, vec!["p1@dest.test", "p2@dest.test"]);
    let half = got
        .iter()
        .find(|m| with_marker(std::slice::from_ref(m), "half-bounced") == 1)
        .unwrap();
    assert_eq!(half.rcpt_to, vec!["good@dest.test"]);
    assert_eq!(with_marker(&got, "oversize"), 0);
    assert_eq!(with_marker(&got, "smuggled"), 0);
    assert_eq!(with_marker(&got, "carrier"), 0);
    assert_eq!(senders.messages().len(), 1, "exactly one DSN");

    // The bodies also leave the Raft log: every node snapshots and purges
    // past the last entry (purge_interval = 1s).
    for id in 1..=3 {
        relay_testkit::wait_for(LONG, || {
            let status = node_status(&cluster, id);
            async move {
                status
                    .await
                    .is_some_and(|s| s.purged_index >= applied)
                    .then_some(())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("node {id} did not purge its log up to {applied}: {e}"));
    }
}

/// Node `id`'s status, or `None` if it does not answer.
async fn node_status(
    cluster: &ProcessCluster,
    id: u64,
) -> Option<relay_proto::raft::NodeStatusReply> {
    cluster.status(id, false).await.ok()
}

/// Target down, then up; 451 then 250; the target storing a message but
/// dropping the connection before its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_mail_is_delivered_once_the_target_recovers() {
    // A port nothing listens on until the target starts there: connections
    // are refused until then.
    let listen = SocketAddr::from(([127, 0, 0, 1], relay_tests::free_ports(1)[0]));
    let (cluster, leader) = start_cluster(ClusterOptions {
        routes: vec![("dest.test".into(), listen.to_string())],
        min_backoff: "1s".into(),
        delivery_extra: "max_backoff = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    let addr = cluster.smtp_addr(leader);

    // 1. Target down: 250 all the same, the message waits (deferred in the
    //    replicated state), and arrives once the target is back.
    send_ok(
        addr,
        "s@sender.test",
        &["r@dest.test"],
        &simple_message("while-down"),
    )
    .await;
    wait_deferred(&cluster).await;
    let target = TestTarget::start_with(TargetOptions {
        listen,
        ..Default::default()
    })
    .await
    .expect("target back on the same address");
    target
        .wait_for_messages(1, LONG)
        .await
        .expect("delivered after recovery");
    cluster.wait_drained(LONG).await.expect("drained");
    assert_eq!(with_marker(&target.messages(), "while-down"), 1);

    // 2. 451 at the end of data, then 250: delivered exactly once.
    target.set_behaviour(Behaviour::RejectData(Reply::temporary()));
    send_ok(
        addr,
        "s@sender.test",
        &["r@dest.test"],
        &simple_message("fourfiftyone"),
    )
    .await;
    wait_deferred(&cluster).await;
    target.set_behaviour(Behaviour::AcceptAll);
    target
        .wait_for_messages(2, LONG)
        .await
        .expect("delivered after 451");
    cluster.wait_drained(LONG).await.expect("drained");
    assert_eq!(with_marker(&target.messages(), "fourfiftyone"), 1);

    // 3. The target stores the message and drops the connection before its
    //    reply: the relay cannot know, so it retries (at-least-once). The
    //    message is never lost; the duplicate is the documented window.
    target.set_behaviour(Behaviour::DropAfterData);
    send_ok(
        addr,
        "s@sender.test",
        &["r@dest.test"],
        &simple_message("dropped-reply"),
    )
    .await;
    target
        .wait_for_messages(3, LONG)
        .await
        .expect("stored once");
    target.set_behaviour(Behaviour::AcceptAll);
    cluster.wait_drained(LONG).await.expect("drained");
    let copies = with_marker(&target.messages(), "dropped-reply");
    // At least the unacknowledged copy and the acknowledged retry (more if
    // a retry came before the behaviour changed back).
    assert!(
        copies >= 2,
        "stored without reply, then delivered on retry: {copies}"
    );
}

/// Waits until some node's replicated queue shows a deferred message.
async fn wait_deferred(cluster: &ProcessCluster) {
    relay_testkit::wait_for(LONG, || async {
        let mut deferred = 0;
        for id in 1..=3 {
            if let Some(s) = node_status(cluster, id).await {
                deferred = deferred.max(s.queue.unwrap_or_default().deferred);
            }
        }
        (deferred > 0).then_some(())
    })
    .await
    .expect("an attempt is recorded as deferred");
}

/// A follower's submission commits via the leader; a node left alone
/// answers DATA with 451 and never 250; after healing, the sender's retry is
/// accepted and the message is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_answers_451_and_the_retry_is_delivered_after_healing() {
    let target = TestTarget::start().await.expect("target");
    let (mut cluster, leader) = start_cluster(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        submit_timeout: "2s".into(),
        ..Default::default()
    })
    .await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let addr = cluster.smtp_addr(follower);
    send_ok(
        addr,
        "s@sender.test",
        &["r@dest.test"],
        &simple_message("via-follower"),
    )
    .await;
    target.wait_for_messages(1, LONG).await.expect("delivered");

    // Stop the two others: the follower is alone, without a quorum.
    for id in (1..=3).filter(|&id| id != follower) {
        cluster.kill(id);
    }
    let message = simple_message("retried");
    let reply = send_mail(addr, "s@sender.test", &["r@dest.test"], &message)
        .await
        .expect("the lone node still answers SMTP");
    assert_eq!(reply.code, 451, "no quorum must give 451, got {reply}");
    assert!(reply.text().starts_with("4.3.0"), "{reply}");

    // Heal, and retry like an MTA would.
    for id in (1..=3).filter(|&id| id != follower) {
        cluster.start_node(id).expect("restart");
    }
    cluster
        .wait_for_leader(LONG, None)
        .await
        .expect("leader after heal");
    // A 451 after a timeout may still commit later (docs/design.md, invariant 1), so
    // count the retries refused after healing: each may add one copy.
    let deadline = tokio::time::Instant::now() + LONG;
    let mut refused_after_heal = 0;
    loop {
        match send_mail(addr, "s@sender.test", &["r@dest.test"], &message).await {
            Ok(reply) if reply.code == 250 => break,
            Ok(reply) => {
                assert_eq!(reply.code, 451, "only 451 while healing: {reply}");
                refused_after_heal += 1;
            }
            Err(e) => panic!("SMTP session failed while healing: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retry never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_drained(LONG).await.expect("drained");
    let copies = with_marker(&target.messages(), "retried");
    // The 451 given while alone cannot commit later: a follower without a
    // leader appends nothing. So: one copy, plus at most one per 451 after
    // healing began.
    assert!(
        (1..=1 + refused_after_heal).contains(&copies),
        "retried message copies: {copies}, late 451s: {refused_after_heal}"
    );
    assert_eq!(with_marker(&target.messages(), "via-follower"), 1);
}

/// Postfix's own load generator against the cluster: 2,000 messages over 20
/// sessions spread over the three nodes; the target gets each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_source_2000_messages_over_20_sessions_arrive_once() {
    let Some(smtp_source) = ["/usr/sbin/smtp-source", "/usr/bin/smtp-source"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        // scripts/setup.sh installs postfix, except where another mail
        // server is installed (Debian's postfix would replace it).
        eprintln!(
            "SKIPPED smtp_source_2000_messages_over_20_sessions_arrive_once: \
             no smtp-source (Debian package postfix; scripts/setup.sh test installs it)"
        );
        return;
    };
    let target = TestTarget::start_with(TargetOptions {
        keep_messages: true,
        ..Default::default()
    })
    .await
    .expect("target");
    let (cluster, _leader) = start_cluster(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        ..Default::default()
    })
    .await;

    // 7 + 7 + 6 sessions, 667 + 667 + 666 messages.
    let plan = [(1u64, 7u32, 667u32), (2, 7, 667), (3, 6, 666)];
    let started = std::time::Instant::now();
    let runs: Vec<_> = plan
        .iter()
        .map(|&(id, sessions, count)| {
            std::process::Command::new(smtp_source)
                // -d: each session sends its messages over one connection.
                .args(["-d", "-s", &sessions.to_string(), "-m", &count.to_string()])
                .args(["-l", "1024", "-f", "s@sender.test", "-t", "r@dest.test"])
                .arg(format!("127.0.0.1:{}", cluster.node(id).ports.smtp))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn smtp-source")
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().expect("smtp-source finished");
        assert!(
            out.status.success(),
            "smtp-source failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let elapsed = started.elapsed();
    println!(
        "smtp-source: 2000 messages accepted in {:.2}s ({:.0} msgs/s)",
        elapsed.as_secs_f64(),
        2000.0 / elapsed.as_secs_f64()
    );

    target
        .wait_for_messages(2000, Duration::from_secs(180))
        .await
        .expect("all 2000 delivered");
    cluster
        .wait_drained(Duration::from_secs(120))
        .await
        .expect("drained");
    let messages = target.messages();
    assert_eq!(
        messages.len(),
        2000,
        "no duplicates after the queue drained"
    );
    // smtp-source sends identical bodies: the relay's queue id in the
    // Received header tells the copies apart.
    let ids: std::collections::BTreeSet<String> = messages
        .iter()
        .map(|m| received_id(&m.data).expect("Received header with an id"))
        .collect();
    assert_eq!(ids.len(), 2000, "every message once");
}

/// The `id <ID>` of the first `Received:` header.
fn received_id(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&data[..data.len().min(1000)]);
    let (_, rest) = text.split_once(" id ")?;
    Some(
        rest.split(|c: char| c.is_whitespace() || c == ';')
            .next()?
            .to_string(),
    )
}
