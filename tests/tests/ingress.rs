//! Ingress features of a real three-process tier, with real SMTP peers on
//! both sides: PROXY protocol v1/v2 from a configured load balancer (relay
//! control and the `Received:` header see the real client; a header from
//! anyone else, or none from the balancer, is refused with a log line and
//! a counter), the submission listeners (587: STARTTLS, then AUTH, before
//! MAIL; 465: TLS from the first octet) delivering to a real target, and
//! recipient lists (550 5.1.1 for unknown recipients, reloaded on SIGHUP)
//! and recipient verification (a probe to the target, cached with expiry).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use relay_smtp::proxy::{encode_v1, encode_v2};
use relay_testkit::{Behaviour, TestTarget};
use relay_tests::smtp::SmtpClient;
use relay_tests::{ClusterOptions, ProcessCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LONG: Duration = Duration::from_secs(60);

fn message(marker: &str) -> Vec<u8> {
    format!(
        "From: <s@sender.test>\r\nTo: <r@dest.test>\r\nSubject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\nbody of {marker}\r\n"
    )
    .into_bytes()
}

async fn start(options: ClusterOptions) -> ProcessCluster {
    let cluster = ProcessCluster::start(options).expect("start cluster");
    cluster
        .wait_for_leader(LONG, None)
        .await
        .expect("a leader is elected");
    cluster
}

/// A TCP connection to `to` from loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.expect("connect")
}

/// `relay_smtp_connections_total{result="<result>"}` on a node.
async fn connections(http: u16, result: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", http)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).await.unwrap();
    let series = format!("relay_smtp_connections_total{{result=\"{result}\"}}");
    page.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Messages at the target whose bytes contain `marker`.
async fn delivered(target: &TestTarget, marker: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(m) = target
            .messages()
            .into_iter()
            .find(|m| m.data.windows(marker.len()).any(|w| w == marker.as_bytes()))
        {
            return m.data.to_vec();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{marker} never reached the target"
        );
        target
            .wait_for_messages(target.accepted_count() as usize + 1, Duration::from_secs(1))
            .await
            .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_relay_control_and_trace_use_the_real_client() {
    let dest = TestTarget::start().await.unwrap();
    // 127.0.0.1 is the balancer; only 10.1.0.0/16 may relay anywhere.
    let cluster = start(ClusterOptions {
        routes: vec![("dest.test".into(), dest.target())],
        smtp_extra:
            "authorized_networks = [\"10.1.0.0/16\"]\nproxy_protocol_from = [\"127.0.0.1/32\"]"
                .into(),
        ..Default::default()
    })
    .await;
    let node = cluster.smtp_addr(1);
    let front: SocketAddr = "198.51.100.1:25".parse().unwrap();

    // v1 naming an authorized client: any domain is accepted at RCPT.
    let mut s = connect_from("127.0.0.1", node).await;
    s.write_all(&encode_v1("10.1.2.3:40001".parse().unwrap(), front))
        .await
        .unwrap();
    let (mut c, greeting) = SmtpClient::over(s).await.unwrap();
    assert_eq!(greeting.code, 220, "{greeting}");
    c.command("EHLO client.test").await.unwrap();
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    let r = c.command("RCPT TO:<x@elsewhere.test>").await.unwrap();
    assert_eq!(r.code, 250, "authorized through the real address: {r}");
    c.command("RSET").await.unwrap();
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await.unwrap().code, 250);
    let r = c.data(&message("proxy-v1")).await.unwrap();
    assert_eq!(r.code, 250, "{r}");

    // v2 naming an outsider: relay denied, the routed domain delivered.
    let mut s = connect_from("127.0.0.1", node).await;
    s.write_all(&encode_v2("192.0.2.10:40002".parse().unwrap(), front))
        .await
        .unwrap();
    let (mut c, greeting) = SmtpClient::over(s).await.unwrap();
    assert_eq!(greeting.code, 220, "{greeting}");
    c.command("EHLO client.test").await.unwrap();
    assert_eq!(
        c.command("MAIL FROM:<s@sender.test>").await.unwrap().code,
        250
    );
    let r = c.command("RCPT TO:<x@elsewhere.test>").await.unwrap();
    assert_eq!(r.code, 554, "an outsider may not relay: {r}");
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await.unwrap().code, 250);
    let r = c.data(&message("proxy-v2")).await.unwrap();
    assert_eq!(r.code, 250, "{r}");

    let v1 = delivered(&dest, "proxy-v1").await;
    let v2 = delivered(&dest, "proxy-v2").await;
    let head = |m: &[u8]| String::from_utf8_lossy(&m[..m.len().min(300)]).into_owned();
    assert!(head(&v1).contains("[10.1.2.3]"), "{}", head(&v1));
    assert!(head(&v2).contains("[192.0.2.10]"), "{}", head(&v2));
    assert!(!head(&v2).contains("127.0.0.1"), "{}", head(&v2));

    // A PROXY header from an address that is not a balancer: 421.
    let s = connect_from("127.0.0.2", node).await;
    let (mut c, greeting) = SmtpClient::over(s).await.unwrap();
    assert_eq!(greeting.code, 220, "{greeting}");
    c.send_raw(&encode_v1("10.1.2.3:1".parse().unwrap(), front))
        .await
        .unwrap();
    let r = c.read_reply().await.unwrap();
    assert_eq!(r.code, 421, "{r}");
    assert!(r.text().starts_with("4.7.0"), "{r}");
    assert!(c.is_closed().await);

    // The balancer without a header: 421.
    let mut s = connect_from("127.0.0.1", node).await;
    s.write_all(b"EHLO client.test\r\n").await.unwrap();
    let (_, r) = SmtpClient::over(s).await.unwrap();
    assert_eq!(r.code, 421, "{r}");

    let http = cluster.node(1).ports.http;
    assert_eq!(connections(http, "refused_proxy_untrusted").await, 1.0);
    assert_eq!(connections(http, "refused_proxy_missing").await, 1.0);
    let log = cluster.log(1);
    assert!(
        log.contains("PROXY protocol header from an address not in smtp.proxy_protocol_from"),
        "no log line for the untrusted header"
    );
    assert!(
        log.contains("PROXY protocol: load balancer connection refused"),
        "no log line for the missing header"
    );
}

fn plain_auth() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0correct horse");
    format!("AUTH PLAIN {token}")
}

fn with_submission(dest: &TestTarget) -> ClusterOptions {
    let hash = relay_smtp::auth::hash_password("correct horse");
    ClusterOptions {
        routes: vec![("dest.test".into(), dest.target())],
        smtp_extra: format!("tls = \"auto\"\n[smtp.auth]\nusers = {{ alice = \"{hash}\" }}"),
        submission_listeners: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_587_and_465_require_auth_and_deliver() -> anyhow::Result<()> {
    let dest = TestTarget::start().await?;
    let cluster = start(with_submission(&dest)).await;
    let ports = cluster.node(2).ports;

    // 587: AUTH and MAIL before STARTTLS get 530 5.7.0.
    let stream = TcpStream::connect(("127.0.0.1", ports.submission)).await?;
    let (mut c, greeting) = SmtpClient::over(stream).await?;
    assert_eq!(greeting.code, 220, "{greeting}");
    let ehlo = c.command("EHLO client.test").await?;
    assert!(ehlo.text().contains("STARTTLS"), "{ehlo}");
    let r = c.command(&plain_auth()).await?;
    assert_eq!(r.code, 530, "{r}");
    assert!(r.text().starts_with("5.7.0"), "{r}");
    let r = c.command("MAIL FROM:<s@sender.test>").await?;
    assert_eq!(r.code, 530, "{r}");
    c.starttls().await?;
    c.command("EHLO client.test").await?;
    let r = c.command("MAIL FROM:<s@sender.test>").await?;
    assert_eq!(r.code, 530, "MAIL before AUTH: {r}");
    let r = c.command(&plain_auth()).await?;
    assert_eq!(r.code, 235, "{r}");
    assert_eq!(c.command("MAIL FROM:<s@sender.test>").await?.code, 250);
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await?.code, 250);
    let r = c.data(&message("sub-587")).await?;
    assert_eq!(r.code, 250, "{r}");

    // 465: TLS from the first octet.
    let stream = TcpStream::connect(("127.0.0.1", ports.smtps)).await?;
    let (mut c, greeting) = SmtpClient::implicit_tls(stream).await?;
    assert_eq!(greeting.code, 220, "{greeting}");
    let ehlo = c.command("EHLO client.test").await?;
    assert!(!ehlo.text().contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.text().contains("AUTH"), "{ehlo}");
    assert_eq!(c.command(&plain_auth()).await?.code, 235);
    assert_eq!(c.command("MAIL FROM:<s@sender.test>").await?.code, 250);
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await?.code, 250);
    let r = c.data(&message("sub-465")).await?;
    assert_eq!(r.code, 250, "{r}");

    for marker in ["sub-587", "sub-465"] {
        let m = delivered(&dest, marker).await;
        let head = String::from_utf8_lossy(&m[..m.len().min(300)]).into_owned();
        assert!(head.contains("ESMTPSA"), "{head}");
    }

    // Plaintext on 465 gets no SMTP greeting.
    let mut stream = TcpStream::connect(("127.0.0.1", ports.smtps)).await?;
    stream.write_all(b"EHLO client.test\r\n").await?;
    let mut answer = Vec::new();
    tokio::time::timeout(LONG, stream.read_to_end(&mut answer))
        .await
        .context("465 did not close a plaintext client")?
        .ok();
    assert!(!String::from_utf8_lossy(&answer).contains("220"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_lists_refuse_unknown_recipients_and_reload_on_sighup() -> anyhow::Result<()> {
    let dest = TestTarget::start().await?;
    let lists = tempfile::tempdir()?;
    let list = lists.path().join("dest.test");
    std::fs::write(&list, "# known users\nr\nalice@dest.test\n")?;
    let cluster = start(ClusterOptions {
        routes: vec![("dest.test".into(), dest.target())],
        smtp_extra: format!(
            "authorized_networks = []\nrecipient_lists_dir = {:?}",
            lists.path().display().to_string()
        ),
        ..Default::default()
    })
    .await;
    let node = cluster.smtp_addr(3);
    let mut c = SmtpClient::connect_ehlo(node).await?;
    assert_eq!(c.command("MAIL FROM:<s@sender.test>").await?.code, 250);
    let r = c.command("RCPT TO:<mallory@dest.test>").await?;
    assert_eq!(r.code, 550, "{r}");
    assert!(r.text().starts_with("5.1.1"), "{r}");
    assert_eq!(c.command("RCPT TO:<ALICE@dest.test>").await?.code, 250);
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await?.code, 250);
    let r = c.data(&message("listed")).await?;
    assert_eq!(r.code, 250, "{r}");
    delivered(&dest, "listed").await;

    // Add mallory; SIGHUP the node; poll until RCPT is accepted.
    std::fs::write(&list, "r\nalice\nmallory\n")?;
    cluster.hangup(3);
    until_rcpt_accepted(
        node,
        "mallory@dest.test",
        "the reloaded list never took effect",
    )
    .await?;
    // A broken file keeps the lists in use.
    std::fs::write(&list, "mallory@elsewhere.test\n")?;
    cluster.hangup(3);
    let deadline = tokio::time::Instant::now() + LONG;
    while !cluster.log(3).contains("the recipient lists did not load") {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no reload error logged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = SmtpClient::connect_ehlo(node).await?;
    c.command("MAIL FROM:<s@sender.test>").await?;
    assert_eq!(c.command("RCPT TO:<mallory@dest.test>").await?.code, 250);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_verification_probes_the_target_and_caches_with_expiry() -> anyhow::Result<()> {
    let dest = TestTarget::start().await?;
    dest.set_behaviour(Behaviour::RejectRcptMatching {
        matching: "nobody@".into(),
        reply: relay_testkit::Reply::new(550, "5.1.1 no such user"),
    });
    let cluster = start(ClusterOptions {
        routes: vec![("dest.test".into(), dest.target())],
        smtp_extra: "authorized_networks = []\nrecipient_verification = true\n\
                     recipient_verification_positive_ttl = \"1h\"\n\
                     recipient_verification_negative_ttl = \"2s\""
            .into(),
        ..Default::default()
    })
    .await;
    let node = cluster.smtp_addr(1);

    // Unknown at the target: 550 5.1.1 at RCPT; known: accepted and delivered.
    let mut c = SmtpClient::connect_ehlo(node).await?;
    assert_eq!(c.command("MAIL FROM:<s@sender.test>").await?.code, 250);
    let r = c.command("RCPT TO:<nobody@dest.test>").await?;
    assert_eq!(r.code, 550, "{r}");
    assert!(r.text().starts_with("5.1.1"), "{r}");
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await?.code, 250);
    let probes = dest.connection_count();
    let r = c.data(&message("verified")).await?;
    assert_eq!(r.code, 250, "{r}");
    delivered(&dest, "verified").await;

    // Cached: asking again opens no probe connection to the target.
    let before = dest.connection_count();
    let mut c = SmtpClient::connect_ehlo(node).await?;
    assert_eq!(c.command("MAIL FROM:<s@sender.test>").await?.code, 250);
    assert_eq!(c.command("RCPT TO:<r@dest.test>").await?.code, 250);
    assert_eq!(c.command("RCPT TO:<nobody@dest.test>").await?.code, 550);
    assert_eq!(
        dest.connection_count(),
        before,
        "answers came from the cache"
    );
    assert!(probes >= 2, "two probes were made ({probes} connections)");

    // The target learns nobody; once the negative answer expires, accepted.
    dest.set_behaviour(Behaviour::AcceptAll);
    until_rcpt_accepted(
        node,
        "nobody@dest.test",
        "the negative answer never expired",
    )
    .await?;

    // A target that does not answer: 450 4.1.1, not cached as unknown.
    let mut c = SmtpClient::connect_ehlo(node).await?;
    c.command("MAIL FROM:<s@sender.test>").await?;
    dest.set_behaviour(Behaviour::DropConnection);
    let r = c.command("RCPT TO:<new@dest.test>").await?;
    assert_eq!(r.code, 450, "{r}");
    assert!(r.text().starts_with("4.1.1"), "{r}");
    dest.set_behaviour(Behaviour::AcceptAll);
    assert_eq!(c.command("RCPT TO:<new@dest.test>").await?.code, 250);
    Ok(())
}

/// Asks `node` for `rcpt` until RCPT gets 250 (every refusal until then a
/// 550), within [`LONG`]; `what` says what never happened. A fresh session
/// each time: 550s count towards max_errors.
async fn until_rcpt_accepted(node: SocketAddr, rcpt: &str, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let mut c = SmtpClient::connect_ehlo(node).await?;
        c.command("MAIL FROM:<s@sender.test>").await?;
        let r = c.command(&format!("RCPT TO:<{rcpt}>")).await?;
        if r.code == 250 {
            return Ok(());
        }
        assert_eq!(r.code, 550, "{r}");
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
