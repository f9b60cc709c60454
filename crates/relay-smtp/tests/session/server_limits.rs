//! `serve` over real loopback sockets (connection caps, panic containment,
//! shutdown) and session timeouts over duplex streams with paused time.

use std::sync::Arc;
use std::time::Duration;

use relay_smtp::{SmtpConfig, serve};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::*;

struct Server {
    addr: std::net::SocketAddr,
    backend: Arc<FakeBackend>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn serve_with(cfg: SmtpConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = FakeBackend::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        Arc::new(cfg),
        backend.clone(),
        shutdown.clone(),
    ));
    Server {
        addr,
        backend,
        shutdown,
        task,
    }
}

async fn connect(addr: std::net::SocketAddr) -> (Client<TcpStream>, Reply) {
    let mut c = Client::new(TcpStream::connect(addr).await.unwrap());
    let greeting = c.reply().await;
    (c, greeting)
}

/// Waits (with a deadline, never a bare sleep) until a new connection is
/// greeted with 220.
async fn until_greeted(addr: std::net::SocketAddr) -> Client<TcpStream> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (c, greeting) = connect(addr).await;
        if greeting.code == 220 {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never greeted again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_panicking_session_is_contained_and_serve_keeps_accepting() {
    // Nobody is authorized, so the backend is asked (and panics) about
    // panic.test.
    let server = serve_with(config_with(|c| c.authorized_networks.clear())).await;
    let (mut c1, _) = connect(server.addr).await;
    c1.ehlo().await;
    c1.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    c1.send("RCPT TO:<bob@panic.test>\r\n").await;
    assert!(c1.closed().await, "the panicking session is closed");
    let (mut c2, greeting) = connect(server.addr).await;
    assert_eq!(greeting.code, 220);
    c2.ehlo().await;
    c2.send_message(
        "a@sender.test",
        &["bob@example.test"],
        &message("after panic"),
    )
    .await
    .expect(250, "2.0.0");
    assert_eq!(server.backend.count(), 1);
    server.shutdown.cancel();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_global_connection_cap_answers_421_and_frees_slots() {
    let server = serve_with(config_with(|c| c.max_connections = 2)).await;
    let (mut c1, g1) = connect(server.addr).await;
    let (_c2, g2) = connect(server.addr).await;
    assert_eq!((g1.code, g2.code), (220, 220));
    let (mut c3, g3) = connect(server.addr).await;
    g3.expect(421, "4.7.0");
    assert!(c3.closed().await);
    c1.cmd("QUIT").await.expect(221, "2.0.0");
    let mut c4 = until_greeted(server.addr).await;
    c4.ehlo().await;
    server.shutdown.cancel();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_per_ip_cap_answers_421_to_outsiders() {
    let server = serve_with(config_with(|c| {
        c.authorized_networks.clear();
        c.max_connections_per_ip = 1;
    }))
    .await;
    let (_c1, g1) = connect(server.addr).await;
    assert_eq!(g1.code, 220);
    let (mut c2, g2) = connect(server.addr).await;
    g2.expect(421, "4.7.0");
    assert!(g2.text().contains("from your address"));
    assert!(c2.closed().await);
    server.shutdown.cancel();
    server.task.await.unwrap().unwrap();
    // Authorized clients (127.0.0.1 by default) are exempt.
    let server = serve_with(config_with(|c| c.max_connections_per_ip = 1)).await;
    let (_a, ga) = connect(server.addr).await;
    let (_b, gb) = connect(server.addr).await;
    assert_eq!((ga.code, gb.code), (220, 220));
    server.shutdown.cancel();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_shutdown_stops_accepting_and_sessions_get_421() {
    let server = serve_with(config()).await;
    let (mut c1, _) = connect(server.addr).await;
    c1.ehlo().await;
    server.shutdown.cancel();
    c1.reply().await.expect(421, "4.3.2");
    assert!(c1.closed().await);
    server.task.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener is closed"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_times_out_with_421() {
    let cfg = config_with(|c| c.command_timeout = Duration::from_secs(5));
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    h.client.reply().await.expect(421, "4.4.2");
    assert!(h.client.closed().await);
}

#[tokio::test(start_paused = true)]
async fn a_command_dribbled_slower_than_the_timeout_is_cut_off() {
    let cfg = config_with(|c| c.command_timeout = Duration::from_secs(5));
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
    for b in [b"N", b"O", b"O"] {
        h.client.send(b).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    h.client.reply().await.expect(421, "4.4.2");
    assert!(h.client.closed().await);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_data_phase_times_out_and_submits_nothing() {
    let cfg = config_with(|c| c.data_timeout = Duration::from_secs(7));
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
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
    h.client.send(b"Subject: stalled\r\n\r\nhalf").await;
    h.client.reply().await.expect(421, "4.4.2");
    assert!(h.client.closed().await);
    assert_eq!(h.backend.count(), 0);
}

#[tokio::test]
async fn many_idle_sessions_do_not_stop_a_new_one() {
    let backend = FakeBackend::new();
    let config = Arc::new(config());
    let shutdown = CancellationToken::new();
    let mut idle = Vec::new();
    for i in 0..2000u32 {
        let (client, server) = tokio::io::duplex(1024);
        let peer = format!("192.0.2.{}:{}", i % 250 + 1, 1024 + i)
            .parse()
            .unwrap();
        tokio::spawn(relay_smtp::run_session(
            server,
            peer,
            config.clone(),
            backend.clone(),
            shutdown.clone(),
        ));
        idle.push(Client::new(client));
    }
    for c in idle.iter_mut().step_by(97) {
        c.reply().await.expect(220, "");
    }
    let mut h = start_with((*config).clone(), OUTSIDER, backend.clone()).await;
    h.client.ehlo().await;
    h.client
        .send_message("a@sender.test", &["bob@example.test"], &message("busy"))
        .await
        .expect(250, "2.0.0");
    shutdown.cancel();
    for c in idle.iter_mut().step_by(97) {
        assert!(c.closed().await);
    }
}

#[tokio::test]
async fn an_idle_session_is_small() {
    // 10,000 idle sessions must fit. The session future holds every
    // state it can be in (no big buffers inline); buffers start empty and
    // grow on demand (1 KiB read buffer while waiting for commands).
    let (_c, server) = tokio::io::duplex(1024);
    let session = relay_smtp::run_session(
        server,
        OUTSIDER.parse().unwrap(),
        Arc::new(config()),
        FakeBackend::new(),
        CancellationToken::new(),
    );
    let size = std::mem::size_of_val(&session);
    assert!(size < 16 * 1024, "session future is {size} bytes");
}
