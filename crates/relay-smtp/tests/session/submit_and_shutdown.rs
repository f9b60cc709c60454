//! Invariant 1 at the session edge: 250 only after submit returned Ok;
//! every submit error is a 4xx and the session goes on (or closes, for
//! shutdown). Shutdown answers 421 4.3.2.

use relay_smtp::SubmitError;

use crate::common::*;

#[tokio::test]
async fn submit_errors_get_451_and_the_next_transaction_works() {
    let mut h = start().await;
    h.client.ehlo().await;
    for err in [
        SubmitError::NoQuorum("no leader".into()),
        SubmitError::Timeout,
        SubmitError::Internal("disk full".into()),
    ] {
        h.backend.fail_next(err);
        let r = h
            .client
            .send_message("a@sender.test", &["bob@example.test"], &message("retry"))
            .await;
        r.expect(451, "4.3.0");
        assert!(
            !r.text().contains("disk full"),
            "internal details stay inside"
        );
    }
    assert_eq!(h.backend.count(), 0);
    let r = h
        .client
        .send_message("a@sender.test", &["bob@example.test"], &message("ok"))
        .await;
    r.expect(250, "2.0.0");
    assert_eq!(h.backend.count(), 1);
}

#[tokio::test]
async fn submit_shutting_down_gets_421_and_closes() {
    let mut h = start().await;
    h.client.ehlo().await;
    h.backend.fail_next(SubmitError::ShuttingDown);
    let r = h
        .client
        .send_message("a@sender.test", &["bob@example.test"], &message("late"))
        .await;
    r.expect(421, "4.3.2");
    assert!(h.client.closed().await);
    h.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_an_idle_session_with_421() {
    let mut h = start().await;
    h.client.ehlo().await;
    h.shutdown.cancel();
    h.client.reply().await.expect(421, "4.3.2");
    assert!(h.client.closed().await);
    h.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_a_message_in_flight_finish_then_answers_421() {
    let mut h = start().await;
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
    assert_eq!(h.client.cmd("DATA").await.code, 354);
    h.client.send(b"Subject: in flight\r\n\r\n").await;
    h.shutdown.cancel();
    h.client.send(b"more\r\n.\r\nNOOP\r\n").await;
    h.client.reply().await.expect(250, "2.0.0");
    h.client.reply().await.expect(421, "4.3.2");
    assert!(h.client.closed().await);
    assert_eq!(h.backend.count(), 1);
}

#[tokio::test]
async fn a_session_started_during_shutdown_is_refused() {
    let (client, server) = tokio::io::duplex(4096);
    let token = tokio_util::sync::CancellationToken::new();
    token.cancel();
    let task = tokio::spawn(relay_smtp::run_session(
        server,
        OUTSIDER.parse().unwrap(),
        std::sync::Arc::new(config()),
        FakeBackend::new(),
        token,
    ));
    let mut c = Client::new(client);
    c.reply().await.expect(421, "4.3.2");
    assert!(c.closed().await);
    task.await.unwrap();
}

#[tokio::test]
async fn a_full_queue_disk_gets_452_4_3_1_at_mail_and_the_session_goes_on() {
    let mut h = start().await;
    h.client.ehlo().await;
    *h.backend.free_space.lock().unwrap() = Some(0);
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(452, "4.3.1");
    // A declared size larger than the room left is refused, a smaller one
    // is not.
    *h.backend.free_space.lock().unwrap() = Some(10_000);
    h.client
        .cmd("MAIL FROM:<a@sender.test> SIZE=20000")
        .await
        .expect(452, "4.3.1");
    h.client
        .cmd("MAIL FROM:<a@sender.test> SIZE=5000")
        .await
        .expect(250, "2.1.0");
    h.client.cmd("RSET").await.expect(250, "2.0.0");
    assert_eq!(h.backend.count(), 0);
    // Space freed: the same session delivers.
    *h.backend.free_space.lock().unwrap() = None;
    h.client
        .send_message("a@sender.test", &["bob@example.test"], &message("room"))
        .await
        .expect(250, "2.0.0");
    assert_eq!(h.backend.count(), 1);
}
