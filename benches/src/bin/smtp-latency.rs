//! `smtp-latency`: SMTP load with per-message acknowledgement latency, for
//! comparing relays (quorum-relay, Postfix) in the same run.
//!
//! `--sessions S` connections each send their share of `--count N` messages
//! of `--size` octets back to back over one session (MAIL, RCPT, DATA);
//! the latency of a message is from its `MAIL FROM` to the `250` after the
//! final dot (what a submitting MTA waits for). `--targets` spreads the
//! sessions round-robin over several addresses (e.g. the three nodes).
//! Prints one line: `accepted=N failed=F secs=... msgs_per_s=... p50_ms=...
//! p90_ms=... p99_ms=... max_ms=...`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(name = "smtp-latency")]
struct Args {
    /// Comma-separated host:port list; sessions are spread over them.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<SocketAddr>,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Messages in total.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Body size in octets.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Envelope recipient.
    #[arg(long, default_value = "rcpt@dest.test")]
    to: String,
}

/// Reads one reply; returns its code.
async fn reply(reader: &mut BufReader<TcpStream>) -> anyhow::Result<u16> {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut line))
            .await
            .context("reply timeout")??;
        if n == 0 || line.len() < 4 {
            bail!("connection closed");
        }
        if line.as_bytes()[3] != b'-' {
            return Ok(line[..3].parse()?);
        }
    }
}

async fn command(reader: &mut BufReader<TcpStream>, line: &str) -> anyhow::Result<u16> {
    reader.get_mut().write_all(line.as_bytes()).await?;
    reply(reader).await
}

/// One session: `count` messages; returns the latency of each accepted one
/// and the number refused.
async fn session(
    addr: SocketAddr,
    count: usize,
    body: &str,
    to: &str,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    if reply(&mut reader).await? != 220 {
        bail!("no greeting from {addr}");
    }
    if command(&mut reader, "EHLO bench.test\r\n").await? != 250 {
        bail!("EHLO refused by {addr}");
    }
    let mut latencies = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        let started = Instant::now();
        let ok = command(&mut reader, "MAIL FROM:<bench@load.test>\r\n").await? == 250
            && command(&mut reader, &format!("RCPT TO:<{to}>\r\n")).await? == 250
            && command(&mut reader, "DATA\r\n").await? == 354
            && command(&mut reader, body).await? == 250;
        if ok {
            latencies.push(started.elapsed());
        } else {
            failed += 1;
            command(&mut reader, "RSET\r\n").await?;
        }
    }
    let _ = command(&mut reader, "QUIT\r\n").await;
    Ok((latencies, failed))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.targets.is_empty() || args.sessions == 0 {
        bail!("need --targets and at least one session");
    }
    let mut body = String::from("Subject: smtp-latency\r\n\r\n");
    while body.len() < args.size {
        body.push_str("0123456789012345678901234567890123456789012345678901234567890123\r\n");
    }
    body.push_str(".\r\n");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..args.sessions {
        let share = args.count / args.sessions + usize::from(s < args.count % args.sessions);
        let addr = args.targets[s % args.targets.len()];
        let body = body.clone();
        let to = args.to.clone();
        tasks.push(tokio::spawn(async move {
            session(addr, share, &body, &to).await
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (l, f) = task.await??;
        latencies.extend(l);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "accepted={} failed={failed} secs={secs:.2} msgs_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        latencies.len(),
        latencies.len() as f64 / secs,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}
