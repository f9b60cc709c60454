//! Inbound SMTP parsing (`relay-smtp`): the DATA scanner (terminator,
//! dot-unstuffing, line checks) over 1 KiB and 32 KiB messages, the
//! header-section check, and one whole session (greeting, EHLO, MAIL, RCPT,
//! DATA, the message, QUIT) over an in-memory stream with a backend that
//! accepts at once: SMTP command parsing and the session's own costs,
//! without Raft.
//!
//! `cargo bench -p relay-benches --bench smtp_parse`

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay_smtp::data::{dot_stuff, scan_data};
use relay_smtp::message::{check_header_section, message_info};
use relay_smtp::{SessionBackend, SmtpConfig, Submission, SubmitError, run_session};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

mod common;

fn scanner(c: &mut Criterion) {
    let mut group = c.benchmark_group("smtp_data_scan");
    for size in [1024, 32 * 1024] {
        let wire = dot_stuff(&common::body(size));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("{}k", size / 1024), |b| {
            b.iter(|| scan_data(&wire, 1000, 10 * 1024 * 1024).expect("terminated"))
        });
    }
    let body = common::body(32 * 1024);
    group.throughput(Throughput::Elements(1));
    group.bench_function("header_section_32k", |b| {
        b.iter(|| {
            let end = check_header_section(&body, 102_400).expect("valid header");
            message_info(&body[..end], body.len() as u64)
        })
    });
    group.finish();
}

/// Accepts every message at once.
#[derive(Debug)]
struct Accept;

impl SessionBackend for Accept {
    fn is_relay_domain(&self, _domain: &str) -> bool {
        true
    }

    fn submit(&self, _s: Submission) -> impl Future<Output = Result<(), SubmitError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Reads one (possibly multi-line) reply; returns its code.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, line: &mut String) -> u16 {
    loop {
        line.clear();
        r.read_line(line).await.unwrap();
        assert!(line.len() >= 4, "short reply {line:?}");
        if line.as_bytes()[3] == b' ' {
            return line[..3].parse().unwrap();
        }
    }
}

fn session(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Arc::new(SmtpConfig {
        hostname: "mx.bench.test".into(),
        ..SmtpConfig::default()
    });
    let backend = Arc::new(Accept);
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut group = c.benchmark_group("smtp_session");
    for size in [1024, 32 * 1024] {
        let data = dot_stuff(&common::body(size));
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("one_message_{}k", size / 1024), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (client, server) = tokio::io::duplex(64 * 1024);
                    let task = tokio::spawn(run_session(
                        server,
                        peer,
                        config.clone(),
                        backend.clone(),
                        CancellationToken::new(),
                    ));
                    let mut client = BufReader::new(client);
                    let mut line = String::new();
                    assert_eq!(reply(&mut client, &mut line).await, 220);
                    for (command, code) in [
                        (&b"EHLO client.bench.test\r\n"[..], 250),
                        (b"MAIL FROM:<bench@load.test>\r\n", 250),
                        (b"RCPT TO:<rcpt@dest.test>\r\n", 250),
                        (b"DATA\r\n", 354),
                        (&data, 250),
                        (b"QUIT\r\n", 221),
                    ] {
                        client.get_mut().write_all(command).await.unwrap();
                        assert_eq!(reply(&mut client, &mut line).await, code, "{line}");
                    }
                    task.await.unwrap();
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = scanner, session
}
criterion_main!(benches);
