//! Hostile input against real `relayd` processes over TCP: every
//! attack gets its SMTP or gRPC answer, and after
//! each one the node still serves a normal session and has lost none of
//! the messages queued before.
//!
//! Each test queues a canary first (its target answers 4xx, so it stays
//! queued), counts every message it gets a 250 for, checks after the
//! attacks that every node still stores exactly those, then lets the target
//! accept and checks every one arrives and the queue drains.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use relay_testkit::{Behaviour, Reply, TestTarget};
use relay_tests::smtp::{SmtpClient, SmtpReply, send_mail, transaction};
use relay_tests::{ClusterOptions, ProcessCluster};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(60);

fn message(marker: &str) -> Vec<u8> {
    format!(
        "From: <s@sender.test>\r\nTo: <r@dest.test>\r\nSubject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\nbody of {marker}\r\n"
    )
    .into_bytes()
}

fn assert_reply(reply: &SmtpReply, code: u16, status: &str, what: &str) {
    assert_eq!(reply.code, code, "{what}: {reply}");
    assert!(reply.text().starts_with(status), "{what}: {reply}");
}

/// A test cluster with its target and the messages it acknowledged.
struct Fixture {
    cluster: ProcessCluster,
    target: TestTarget,
    /// Markers of every message that got 250.
    acked: BTreeSet<String>,
}

impl Fixture {
    async fn start(smtp_extra: &str, extra: impl FnOnce(&mut ClusterOptions, &str)) -> Fixture {
        let target = TestTarget::start().await.expect("target");
        target.set_behaviour(Behaviour::RejectRcpt(Reply::temporary()));
        let mut options = ClusterOptions {
            routes: vec![("dest.test".into(), target.target())],
            smtp_extra: smtp_extra.into(),
            ..ClusterOptions::default()
        };
        extra(&mut options, &target.target());
        let cluster = ProcessCluster::start(options).expect("start cluster");
        cluster.wait_for_leader(LONG, None).await.expect("leader");
        let mut fixture = Fixture {
            cluster,
            target,
            acked: BTreeSet::new(),
        };
        fixture.normal("canary").await;
        fixture.assert_stored().await;
        fixture
    }

    fn addr(&self) -> SocketAddr {
        self.cluster.smtp_addr(1)
    }

    /// A normal session must still work: one message, 250. Retries for a
    /// few seconds only while the node is still closing sessions an attack
    /// left (connection caps); any other answer fails at once.
    async fn normal(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut client = match SmtpClient::connect(self.addr()).await {
                Ok((client, greeting)) if greeting.code == 220 => client,
                Ok((_, greeting)) if greeting.code == 421 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                other => panic!("after {marker}: no normal greeting: {other:?}"),
            };
            client.command("EHLO client.test").await.expect("EHLO");
            let reply = transaction(
                &mut client,
                "s@sender.test",
                &["r@dest.test"],
                &message(marker),
            )
            .await
            .expect("normal session");
            assert_reply(
                &reply,
                250,
                "2.0.0",
                &format!("normal session after {marker}"),
            );
            self.acked.insert(marker.to_string());
            return;
        }
    }

    /// Every node stores exactly the acknowledged messages.
    async fn assert_stored(&self) {
        let want = self.acked.len() as u64;
        let deadline = Instant::now() + LONG;
        loop {
            let mut seen = Vec::new();
            for id in 1..=3 {
                let s = self.cluster.status(id, true).await.expect("status");
                seen.push(s.stored_bodies);
            }
            if seen.iter().all(|&n| n == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stored bodies per node {seen:?}, expected {want} (messages lost or extra)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The target accepts; every acknowledged message arrives and the
    /// queue drains on every node.
    async fn finish(self) {
        self.assert_stored().await;
        self.target.set_behaviour(Behaviour::AcceptAll);
        let out = self
            .cluster
            .relayctl(1, &["queue", "flush", "--all", "--yes"]);
        assert!(out.status.success(), "flush: {out:?}");
        let deadline = Instant::now() + LONG;
        loop {
            let got: BTreeSet<String> = self
                .target
                .messages()
                .iter()
                .filter_map(|m| subject(&m.data))
                .collect();
            let missing: Vec<&String> = self.acked.difference(&got).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "acknowledged messages never arrived: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.cluster.wait_drained(LONG).await.expect("drained");
    }
}

fn subject(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .map(str::to_string)
}

/// A connection from a chosen loopback source address.
async fn connect_from(source: &str, to: SocketAddr) -> (SmtpClient, SmtpReply) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(to).await.expect("connect");
    SmtpClient::over(stream).await.expect("greeting")
}

/// Opens and holds greeted sessions, `n` from each source address. Sessions
/// an earlier step closed may take a moment to end on the server, so a 421
/// here drops the batch and tries again (within a deadline).
async fn hold(to: SocketAddr, sources: &[(&str, usize)]) -> Vec<SmtpClient> {
    let deadline = Instant::now() + Duration::from_secs(10);
    'again: loop {
        let mut held = Vec::new();
        for &(source, n) in sources {
            for _ in 0..n {
                let (c, greeting) = connect_from(source, to).await;
                if greeting.code != 220 {
                    assert!(
                        Instant::now() < deadline,
                        "cannot hold sessions: {greeting}"
                    );
                    drop(held);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'again;
                }
                held.push(c);
            }
        }
        return held;
    }
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:") * 1024
}

fn rss(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:") * 1024
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("field in /proc/PID/status")
}

const LIMITS: &str = r#"
authorized_networks = []
max_message_size = 1048576
max_recipients = 5
max_connections = 8
max_connections_per_ip = 5
command_timeout = "2s"
data_timeout = "2s"
"#;

/// Relay control, line and size limits, recipients, errors, slow clients,
/// connection caps and garbage, one after another against one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_smtp_input_is_refused_and_the_node_keeps_serving() {
    let mut f = Fixture::start(LIMITS, |_, _| {}).await;
    let addr = f.addr();

    // No open relay, no routing tricks (the test client is not in the
    // authorized networks here).
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    let r = c.command("RCPT TO:<x@elsewhere.test>").await.unwrap();
    assert_reply(&r, 554, "5.7.1", "foreign recipient");
    for trick in [
        "bob%elsewhere.test@dest.test",
        "@dest.test:bob@elsewhere.test",
        "\"bob@elsewhere.test\"@dest.test",
        "elsewhere.test!bob@dest.test",
        "bob@[127.0.0.1]",
        "bob@localhost",
    ] {
        let r = c.command(&format!("RCPT TO:<{trick}>")).await.unwrap();
        assert!(r.code >= 500, "{trick} must be refused: {r}");
    }
    drop(c);
    f.normal("after-relay-control").await;

    // A command line over 512 octets; the session goes on.
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    let r = c
        .command(&format!("NOOP {}", "x".repeat(600)))
        .await
        .unwrap();
    assert_reply(&r, 500, "5.5.2", "long command line");
    assert_eq!(c.command("NOOP").await.unwrap().code, 250);
    // NUL and a bare LF inside a command line.
    c.send_raw(b"NOOP a\0b\r\n").await.unwrap();
    assert_reply(
        &c.read_reply().await.unwrap(),
        500,
        "5.5.2",
        "NUL in command",
    );
    c.send_raw(b"NOOP a\nb\r\n").await.unwrap();
    let r = c.read_reply().await.unwrap();
    assert_eq!(r.code / 100, 5, "bare LF in command: {r}");
    drop(c);
    f.normal("after-long-command").await;

    // A text line over 1000 octets.
    let mut long_line = message("long-line");
    long_line.extend_from_slice(&[b'y'; 1200]);
    long_line.extend_from_slice(b"\r\n");
    let r = send_mail(addr, "s@sender.test", &["r@dest.test"], &long_line)
        .await
        .unwrap();
    assert_reply(&r, 500, "5.5.2", "long text line");
    f.normal("after-long-line").await;

    // A header section over 100 KiB.
    let mut big_header = Vec::new();
    for i in 0..2000 {
        big_header.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "h".repeat(60)).as_bytes());
    }
    big_header.extend_from_slice(&message("big-header"));
    let r = send_mail(addr, "s@sender.test", &["r@dest.test"], &big_header)
        .await
        .unwrap();
    assert_reply(&r, 552, "5.3.4", "header section");
    f.normal("after-big-header").await;

    // SIZE declared over the limit, and 40 MiB streamed without SIZE: the
    // node reads and discards it, its peak memory grows by far less.
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    let r = c
        .command("MAIL FROM:<s@sender.test> SIZE=2000000")
        .await
        .unwrap();
    assert_reply(&r, 552, "5.3.4", "SIZE over the limit");
    let pid = f.cluster.pid(1).unwrap();
    let peak_before = peak_rss(pid);
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await.unwrap().code, 250);
    assert_eq!(c.command("DATA").await.unwrap().code, 354);
    c.send_raw(&message("huge")).await.unwrap();
    let line = [b"z".repeat(998), b"\r\n".to_vec()].concat();
    let chunk = line.repeat(1024); // 1 MiB
    for _ in 0..40 {
        c.send_raw(&chunk).await.unwrap();
    }
    c.send_raw(b".\r\n").await.unwrap();
    assert_reply(
        &c.read_reply().await.unwrap(),
        552,
        "5.3.4",
        "streamed over SIZE",
    );
    let grown = peak_rss(pid).saturating_sub(peak_before);
    println!("peak RSS growth while 40 MiB streamed past a 1 MiB limit: {grown} bytes");
    assert!(
        grown < 16 << 20,
        "the node buffered the oversized message: peak RSS grew {grown} bytes"
    );
    assert_eq!(c.command("NOOP").await.unwrap().code, 250);
    drop(c);
    f.normal("after-size").await;

    // Recipients over the limit: 452 4.5.3, the first five stay.
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    for i in 0..5 {
        let r = c
            .command(&format!("RCPT TO:<r{i}@dest.test>"))
            .await
            .unwrap();
        assert_eq!(r.code, 250, "{r}");
    }
    let r = c.command("RCPT TO:<r5@dest.test>").await.unwrap();
    assert_reply(&r, 452, "4.5.3", "sixth recipient");
    drop(c);
    f.normal("after-recipients").await;

    // Errors: 20 bad commands, then 421 4.7.0 and the connection closes.
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    let mut closing = None;
    for _ in 0..25 {
        let r = c.command("XYZZY").await.unwrap();
        if r.code == 500 {
            // The 421 follows the 20th 500 without another command.
            continue;
        }
        closing = Some(r);
        break;
    }
    if closing.is_none() {
        closing = Some(c.read_reply().await.unwrap());
    }
    assert_reply(closing.as_ref().unwrap(), 421, "4.7.0", "too many errors");
    assert!(c.is_closed().await, "closed after too many errors");
    f.normal("after-errors").await;

    // Slowloris: half a command line, then silence: 421 4.4.2 at the
    // command timeout. The same inside DATA at the data timeout.
    let (mut c, _) = SmtpClient::connect(addr).await.unwrap();
    c.send_raw(b"EHLO slow").await.unwrap();
    assert_reply(&c.read_reply().await.unwrap(), 421, "4.4.2", "slow command");
    assert!(c.is_closed().await);
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await.unwrap().code, 250);
    assert_eq!(c.command("DATA").await.unwrap().code, 354);
    c.send_raw(b"Subject: slow\r\n\r\nbody without an end")
        .await
        .unwrap();
    assert_reply(&c.read_reply().await.unwrap(), 421, "4.4.2", "slow data");
    f.normal("after-slowloris").await;

    // Connection caps: five per IP, eight in all.
    let mut held = hold(addr, &[("127.0.0.1", 5)]).await;
    let (_, greeting) = connect_from("127.0.0.1", addr).await;
    assert_reply(&greeting, 421, "4.7.0", "sixth connection from one IP");
    held.extend(hold(addr, &[("127.0.0.2", 3)]).await);
    let (_, greeting) = connect_from("127.0.0.3", addr).await;
    assert_reply(&greeting, 421, "4.7.0", "ninth connection in all");
    drop(held);
    f.normal("after-connection-caps").await;

    // Garbage: 64 KiB of binary, pipelined; the node answers or closes,
    // and keeps serving others.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = raw.write_all(&garbage).await;
    drop(raw);
    f.normal("after-garbage").await;

    f.finish().await;
}

/// STARTTLS injection, AUTH only over TLS, failed-login limit, a login
/// that relays, and a certificate reload on SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_auth_and_certificate_reload_on_a_real_node() {
    let hash = relay_smtp::auth::hash_password("correct horse");
    let smtp = format!(
        "authorized_networks = []\ntls = \"auto\"\n[smtp.auth]\nmax_failures = 3\nusers = {{ alice = \"{hash}\" }}\n"
    );
    // Foreign domains go to the test target too (Postfix's relayhost).
    let mut f = Fixture::start(&smtp, |o, target| {
        o.delivery_extra = format!("default_route = [\"{target}\"]");
    })
    .await;
    let addr = f.addr();
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);

    // In clear: no AUTH offered, AUTH refused with 538.
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    let ehlo = c.command("EHLO client.test").await.unwrap();
    assert!(
        ehlo.text().contains("STARTTLS") && !ehlo.text().contains("AUTH"),
        "{ehlo}"
    );
    let r = c
        .command(&format!("AUTH PLAIN {}", b64(b"\0alice\0correct horse")))
        .await
        .unwrap();
    assert_reply(&r, 538, "5.7.11", "AUTH in clear");

    // Commands pipelined with STARTTLS are discarded: after TLS, the
    // injected MAIL did not happen.
    c.starttls_pipelining(b"MAIL FROM:<evil@attacker.test>\r\n")
        .await
        .expect("TLS");
    let first_cert = c.peer_certificate().unwrap().to_vec();
    let ehlo = c.command("EHLO client.test").await.unwrap();
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{ehlo}");
    let r = c.command("RCPT TO:<r@dest.test>").await.unwrap();
    assert_reply(&r, 503, "5.5.1", "no MAIL carried over TLS");

    // Wrong passwords: 535 each, the third also 421 and close.
    let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0guess"));
    assert_reply(
        &c.command(&bad).await.unwrap(),
        535,
        "5.7.8",
        "wrong password",
    );
    assert_reply(
        &c.command(&bad).await.unwrap(),
        535,
        "5.7.8",
        "wrong password",
    );
    assert_reply(
        &c.command(&bad).await.unwrap(),
        535,
        "5.7.8",
        "wrong password",
    );
    assert_reply(&c.read_reply().await.unwrap(), 421, "4.7.0", "login limit");
    assert!(c.is_closed().await);
    // Blocked from 127.0.0.1 now, even with the right password; another
    // address logs in and may relay to a foreign domain.
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    c.starttls().await.unwrap();
    c.command("EHLO client.test").await.unwrap();
    let good = format!("AUTH PLAIN {}", b64(b"\0alice\0correct horse"));
    assert_reply(
        &c.command(&good).await.unwrap(),
        421,
        "4.7.0",
        "blocked address",
    );
    let (mut c, greeting) = connect_from("127.0.0.2", addr).await;
    assert_eq!(greeting.code, 220);
    c.command("EHLO client.test").await.unwrap();
    c.starttls().await.unwrap();
    c.command("EHLO client.test").await.unwrap();
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    let r = c.command("RCPT TO:<x@elsewhere.test>").await.unwrap();
    assert_reply(&r, 554, "5.7.1", "foreign recipient before login");
    c.command("RSET").await.unwrap();
    assert_reply(&c.command(&good).await.unwrap(), 235, "2.7.0", "login");
    // Relaying for a logged-in client: a recipient of the relay domain and
    // a foreign one in one message.
    let r = transaction(
        &mut c,
        "s@sender.test",
        &["r@dest.test", "x@elsewhere.test"],
        &message("authenticated"),
    )
    .await
    .unwrap();
    assert_reply(&r, 250, "2.0.0", "authenticated relay");
    f.acked.insert("authenticated".into());
    drop(c);
    f.normal("after-auth").await;

    // SIGHUP: new certificate files in the node's TLS dir are used by the
    // next handshake; the node keeps its queue.
    let tls_dir = f.cluster.node(1).data_dir.join("tls");
    let fresh = tempfile::tempdir().unwrap();
    relay_smtp::load_or_create_tls(fresh.path(), "renewed.test").unwrap();
    for file in ["cert.pem", "key.pem"] {
        std::fs::copy(fresh.path().join(file), tls_dir.join(file)).unwrap();
    }
    f.cluster.hangup(1);
    let deadline = Instant::now() + LONG;
    loop {
        let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
        c.starttls().await.unwrap();
        if c.peer_certificate().unwrap() != first_cert.as_slice() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken file: the reload fails, the node keeps the last good one.
    std::fs::write(tls_dir.join("cert.pem"), "not a certificate").unwrap();
    f.cluster.hangup(1);
    let deadline = Instant::now() + LONG;
    while !f.cluster.log(1).contains("the certificate did not load") {
        assert!(Instant::now() < deadline, "no reload error logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = SmtpClient::connect_ehlo(addr).await.unwrap();
    c.starttls()
        .await
        .expect("still TLS with the last good certificate");
    f.normal("after-reload").await;
    f.finish().await;
}

/// The cluster and admin ports refuse strangers; gRPC size limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_admin_ports_refuse_strangers() {
    use relay_proto::raft::{NodeStatusRequest, ProbeRequest, RaftPayload, SubmitRequest};
    let mut f = Fixture::start("", |_, _| {}).await;

    // No secret, or a wrong one: UNAUTHENTICATED for every method.
    let mut stranger = f
        .cluster
        .raft_client_with_secret(1, "not-the-cluster-secret")
        .await
        .unwrap();
    let code = stranger
        .node_status(NodeStatusRequest { with_digest: false })
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, tonic::Code::Unauthenticated);
    let code = stranger
        .append_entries(RaftPayload {
            data: vec![0; 16],
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, tonic::Code::Unauthenticated);
    let code = stranger
        .submit(SubmitRequest {
            command: vec![1, 2, 3],
        })
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, tonic::Code::Unauthenticated);
    let code = stranger
        .probe_targets(ProbeRequest::default())
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, tonic::Code::Unauthenticated);
    f.normal("after-strangers").await;

    // With the secret: a malformed payload is INVALID_ARGUMENT, and a
    // message over the 64 MiB gRPC limit is refused; the node serves on.
    let mut member = f.cluster.raft_client(1).await.unwrap();
    let code = member
        .append_entries(RaftPayload {
            data: vec![0xff; 64],
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, tonic::Code::InvalidArgument);
    // A well-formed payload in a newer format version (a newer release
    // that skipped the upgrade rule): refused by name, never misread.
    let newer = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(1, 2),
        last_log_id: None,
    };
    let next_version = relay_types::FORMAT_VERSION + 1;
    let err = member
        .vote(RaftPayload {
            data: relay_types::codec::encode_as(next_version, &newer),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("format version {next_version}")),
        "{err:?}"
    );
    let submit_err = member
        .submit(SubmitRequest {
            command: relay_types::codec::encode_as(
                next_version,
                &relay_types::Command::Batch(vec![]),
            ),
        })
        .await
        .unwrap_err();
    assert_eq!(
        submit_err.code(),
        tonic::Code::InvalidArgument,
        "{submit_err:?}"
    );
    assert!(
        submit_err
            .message()
            .contains(&format!("format version {next_version}")),
        "{submit_err:?}"
    );
    f.normal("after-newer-format").await;
    let err = member
        .submit(SubmitRequest {
            command: vec![0; 65 << 20],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
        ),
        "oversized gRPC message: {err:?}"
    );
    f.normal("after-oversized-grpc").await;

    // With the secret but from a node id outside the membership: a Vote
    // with a far higher term is refused and changes nothing.
    let term_before = f.cluster.status(1, false).await.unwrap().term;
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(term_before + 1000, 99),
        last_log_id: None,
    };
    let err = member
        .vote(RaftPayload {
            data: relay_types::encode(&vote),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let status = f.cluster.status(1, false).await.unwrap();
    assert!(
        status.term < term_before + 1000,
        "a stranger's vote moved the term"
    );
    f.normal("after-stranger-vote").await;

    // The admin port: no token, wrong token.
    let out = std::process::Command::new(ProcessCluster::bin("relayctl"))
        .args([
            "--addr",
            &format!("127.0.0.1:{}", f.cluster.node(1).ports.admin),
        ])
        .args(["--token", "wrong", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the admin token"), "{err}");
    f.normal("after-admin").await;
    f.finish().await;
}

/// 10,000 idle sessions, plain, then 2,000 over TLS; memory per
/// session is reported (and bounded), and a new session is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_sessions_are_cheap_and_a_new_one_is_served() {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let sessions: usize = std::env::var("QR_IDLE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .min((limit as usize).saturating_sub(8_000));
    let smtp = "max_connections = 30000\nmax_connections_per_ip = 30000\ntls = \"auto\"\n";
    let mut f = Fixture::start(smtp, |_, _| {}).await;
    let addr = f.addr();
    let pid = f.cluster.pid(1).unwrap();

    let before = rss(pid);
    let mut idle = Vec::with_capacity(sessions);
    for i in 0..sessions {
        // Spread over source addresses so the client side's ports last.
        let source = format!("127.0.{}.{}", 1 + i / 5000, 1 + (i % 250));
        let (c, greeting) = connect_from(&source, addr).await;
        assert_eq!(greeting.code, 220, "session {i}: {greeting}");
        idle.push(c);
    }
    let plain_after = rss(pid);
    let per_plain = plain_after.saturating_sub(before) / sessions as u64;
    println!(
        "{sessions} idle plain sessions: node RSS {} -> {} bytes, {per_plain} bytes per session",
        before, plain_after
    );
    f.normal("with-idle-plain").await;

    let tls_sessions = sessions / 5;
    let tls_before = rss(pid);
    let mut idle_tls = Vec::with_capacity(tls_sessions);
    for i in 0..tls_sessions {
        let source = format!("127.0.9.{}", 1 + (i % 250));
        let (mut c, greeting) = connect_from(&source, addr).await;
        assert_eq!(greeting.code, 220);
        c.command("EHLO idle.test").await.unwrap();
        c.starttls().await.unwrap();
        idle_tls.push(c);
    }
    let per_tls = rss(pid).saturating_sub(tls_before) / tls_sessions as u64;
    println!("{tls_sessions} idle TLS sessions: {per_tls} bytes per session");
    f.normal("with-idle-tls").await;

    // Bounded, not a speed figure: a session must not hold large buffers.
    assert!(
        per_plain < 64 << 10,
        "{per_plain} bytes per idle plain session"
    );
    assert!(per_tls < 128 << 10, "{per_tls} bytes per idle TLS session");
    drop(idle);
    drop(idle_tls);
    f.finish().await;
}

/// Outbound TLS per route through relayd: `required` to a target whose
/// certificate nobody trusts is never sent (deferred, nothing stored at the
/// target); `required` with the target's CA in `delivery.ca_file` is
/// delivered over TLS; `opportunistic` encrypts without verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_tls_policy_is_enforced_per_route() {
    let tls_target = || {
        TestTarget::start_with(relay_testkit::TargetOptions {
            starttls: true,
            ..relay_testkit::TargetOptions::default()
        })
    };
    let trusted = tls_target().await.unwrap();
    let untrusted = tls_target().await.unwrap();
    let opportunistic = tls_target().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("private-ca.pem");
    std::fs::write(&ca_file, trusted.certificate_pem().unwrap()).unwrap();
    let options = ClusterOptions {
        routes: vec![
            ("private.test".into(), trusted.target()),
            ("untrusted.test".into(), untrusted.target()),
            ("opportunistic.test".into(), opportunistic.target()),
        ],
        route_tls: [
            ("private.test".to_string(), "required".to_string()),
            ("untrusted.test".to_string(), "required".to_string()),
            (
                "opportunistic.test".to_string(),
                "opportunistic".to_string(),
            ),
        ]
        .into(),
        delivery_extra: format!("ca_file = \"{}\"", ca_file.display()),
        ..ClusterOptions::default()
    };
    let cluster = ProcessCluster::start(options).unwrap();
    cluster.wait_for_leader(LONG, None).await.unwrap();
    let addr = cluster.smtp_addr(1);
    for (domain, marker) in [
        ("untrusted.test", "never-in-clear"),
        ("private.test", "private"),
        ("opportunistic.test", "opportunistic"),
    ] {
        let to = format!("r@{domain}");
        let r = send_mail(addr, "s@sender.test", &[&to], &message(marker))
            .await
            .unwrap();
        assert_reply(&r, 250, "2.0.0", marker);
    }
    for target in [&trusted, &opportunistic] {
        let got = target.wait_for_messages(1, LONG).await.unwrap();
        assert!(got[0].tls, "delivered without TLS");
    }
    // The untrusted target was tried (a handshake that failed) and got
    // nothing; the message is still stored, deferred, on every node.
    let deadline = Instant::now() + LONG;
    loop {
        let mut deferred = Vec::new();
        for id in 1..=3 {
            let s = cluster.status(id, true).await.unwrap();
            deferred.push((s.queue.unwrap_or_default().deferred, s.stored_bodies));
        }
        if untrusted.connection_count() > 0 && deferred.iter().all(|&d| d == (1, 1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "untrusted route: connections {}, (deferred, stored) per node {deferred:?}",
            untrusted.connection_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        untrusted.messages().is_empty(),
        "sent over an untrusted TLS session"
    );
    let again = send_mail(
        addr,
        "s@sender.test",
        &["r@private.test"],
        &message("again"),
    )
    .await
    .unwrap();
    assert_reply(&again, 250, "2.0.0", "after the refused route");
    trusted.wait_for_messages(2, LONG).await.unwrap();
}
