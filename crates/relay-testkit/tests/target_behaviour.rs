//! The test target over real TCP, driven by a scripted raw SMTP client:
//! what it stores, and each runtime behaviour switch.

use std::time::Duration;

use relay_testkit::{Behaviour, Reply, TargetOptions, TestTarget, wait_until};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A raw client: sends a line, returns the complete (multi-line) reply.
struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(target: &TestTarget) -> Client {
        let stream = TcpStream::connect(target.addr()).await.expect("connect");
        Client {
            io: BufReader::new(stream),
        }
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.io.read_line(&mut line).await.expect("read reply");
            assert!(n > 0, "connection closed; reply so far: {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.io
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        self.reply().await
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    /// True once the server has closed the connection.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(WAIT, self.io.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}

#[tokio::test]
async fn accepts_and_stores_a_message_with_dot_unstuffing() {
    let target = TestTarget::start().await.expect("start");
    let mut c = Client::connect(&target).await;
    assert!(c.reply().await.starts_with("220 "));
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("250-8BITMIME") && ehlo.ends_with("\r\n"));
    assert!(!ehlo.contains("STARTTLS"));
    assert!(
        c.cmd("MAIL FROM:<> BODY=8BITMIME")
            .await
            .starts_with("250 ")
    );
    assert!(c.cmd("RCPT TO:<a@example.test>").await.starts_with("250 "));
    assert!(c.cmd("RCPT TO:<b@example.test>").await.starts_with("250 "));
    assert!(c.cmd("DATA").await.starts_with("354 "));
    c.raw(b"Subject: t\r\n\r\n..dot\r\nline\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as 1"));
    assert!(c.cmd("QUIT").await.starts_with("221 "));

    let messages = target.wait_for_messages(1, WAIT).await.expect("message");
    let m = &messages[0];
    assert_eq!(m.seq, 1);
    assert_eq!(m.helo, "client.test");
    assert_eq!(m.mail_from, "");
    assert_eq!(m.mail_params, "BODY=8BITMIME");
    assert_eq!(m.rcpt_to, vec!["a@example.test", "b@example.test"]);
    assert_eq!(&m.data[..], b"Subject: t\r\n\r\n.dot\r\nline\r\n");
    assert!(!m.tls);
    assert_eq!(target.connection_count(), 1);
}

#[tokio::test]
async fn rcpt_and_data_replies_follow_the_behaviour_switch() {
    let target = TestTarget::start().await.expect("start");
    let mut c = Client::connect(&target).await;
    c.reply().await;
    c.cmd("HELO client.test").await;

    target.set_behaviour(Behaviour::RejectRcptMatching {
        matching: "bad@".into(),
        reply: Reply::permanent(),
    });
    c.cmd("MAIL FROM:<s@sender.test>").await;
    assert!(
        c.cmd("RCPT TO:<bad@example.test>")
            .await
            .starts_with("550 5.1.1")
    );
    assert!(
        c.cmd("RCPT TO:<good@example.test>")
            .await
            .starts_with("250 ")
    );

    target.set_behaviour(Behaviour::RejectData(Reply::temporary()));
    c.cmd("DATA").await;
    c.raw(b"Subject: t\r\n\r\nx\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("451 4.3.0"));
    assert!(target.messages().is_empty());

    target.set_behaviour(Behaviour::RejectRcpt(Reply::new(452, "4.5.3 too many")));
    c.cmd("RSET").await;
    c.cmd("MAIL FROM:<s@sender.test>").await;
    assert!(
        c.cmd("RCPT TO:<x@example.test>")
            .await
            .starts_with("452 4.5.3")
    );
    assert!(c.cmd("DATA").await.starts_with("554 "));

    target.set_behaviour(Behaviour::RejectMail(Reply::new(421, "4.3.2 closing")));
    assert!(c.cmd("MAIL FROM:<s@sender.test>").await.starts_with("421 "));
    assert_eq!(target.accepted_count(), 0);
}

#[tokio::test]
async fn drop_greeting_and_drop_after_data_behaviours() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::DropConnection,
        ..TargetOptions::default()
    })
    .await
    .expect("start");
    let mut c = Client::connect(&target).await;
    assert!(c.closed().await, "dropped without a greeting");

    target.set_behaviour(Behaviour::RejectGreeting(Reply::new(
        554,
        "5.3.2 no service",
    )));
    let mut c = Client::connect(&target).await;
    assert!(c.reply().await.starts_with("554 "));

    target.set_behaviour(Behaviour::AcceptAll);
    let mut c = Client::connect(&target).await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<s@sender.test>").await;
    c.cmd("RCPT TO:<a@example.test>").await;
    c.cmd("DATA").await;
    target.set_behaviour(Behaviour::DropAfterData);
    c.raw(b"Subject: t\r\n\r\nx\r\n.\r\n").await;
    assert!(c.closed().await, "no reply to the final dot");
    let messages = target.wait_for_messages(1, WAIT).await.expect("kept");
    assert_eq!(&messages[0].data[..], b"Subject: t\r\n\r\nx\r\n");
    assert_eq!(target.connection_count(), 3);
}

#[tokio::test]
async fn drop_during_data_closes_after_354_and_stores_nothing() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::DropDuringData,
        ..Default::default()
    })
    .await
    .expect("target");
    let mut c = Client::connect(&target).await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<s@sender.test>").await;
    c.cmd("RCPT TO:<a@example.test>").await;
    assert!(c.cmd("DATA").await.starts_with("354 "));
    assert!(c.closed().await, "closed in the middle of DATA");
    assert_eq!(target.accepted_count(), 0);
    assert!(target.messages().is_empty());
}

#[tokio::test]
async fn starttls_is_offered_when_enabled() {
    let target = TestTarget::start_with(TargetOptions {
        starttls: true,
        ..TargetOptions::default()
    })
    .await
    .expect("start");
    let mut c = Client::connect(&target).await;
    c.reply().await;
    assert!(c.cmd("EHLO client.test").await.contains("STARTTLS"));
    assert!(c.cmd("STARTTLS").await.starts_with("220 "));
}

#[tokio::test]
async fn shutdown_ends_stalled_sessions() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::Stall,
        ..TargetOptions::default()
    })
    .await
    .expect("start");
    let mut c = Client::connect(&target).await;
    wait_until(WAIT, || target.connection_count() == 1)
        .await
        .expect("connection seen");
    tokio::time::timeout(WAIT, target.shutdown())
        .await
        .expect("shutdown finishes");
    assert!(c.closed().await);
}

#[tokio::test]
async fn wait_for_messages_times_out_with_a_description() {
    let target = TestTarget::start().await.expect("start");
    let err = target
        .wait_for_messages(1, Duration::from_millis(50))
        .await
        .expect_err("nothing arrives");
    assert!(err.to_string().contains("1 message(s)"), "{err}");
}
