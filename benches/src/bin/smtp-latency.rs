//! `smtp-latency`: SMTP load with per-message acknowledgement latency, for
//! comparing relays (quorum-relay, Postfix) in the same run.
//!
//! `--sessions S` connections each send their share of `--count N` messages
//! of `--size` octets back to back over one session (MAIL, RCPT, DATA);
//! the latency of a message is from its `MAIL FROM` to the `250` after the
//! final dot (what a submitting MTA waits for). `--targets` spreads the
//! sessions round-robin over several addresses (e.g. the three nodes).
//!
//! `--rate R` paces the load instead: R messages per second offered in
//! total, spread evenly over the sessions (session `s` sends its `k`-th
//! message at `start + (s + k * sessions) / R`). Open loop as far as one
//! SMTP session allows: a session sends at its scheduled time, or at once
//! when it is already late (its previous message took longer than the
//! interval), and is then counted `late`.
//!
//! Prints one line: `accepted=N failed=F secs=... msgs_per_s=... p50_ms=...
//! p90_ms=... p99_ms=... max_ms=...`; with `--rate` also `offered_per_s=R
//! late=L sched_p50_ms=... sched_p99_ms=...` (latency from the scheduled
//! send time to the 250, which includes any time the session was behind:
//! what a sender at that rate would see).

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
    /// Offered load in messages per second over all sessions (paced);
    /// without it every session sends back to back.
    #[arg(long)]
    rate: Option<f64>,
}

/// When a paced session sends: its first message at `first`, then one per
/// `every`.
#[derive(Clone, Copy, Debug)]
struct Pace {
    first: Instant,
    every: Duration,
}

/// What one session measured.
#[derive(Debug, Default)]
struct SessionResult {
    /// MAIL FROM to 250, per accepted message.
    latencies: Vec<Duration>,
    /// Scheduled send time to 250, per accepted message (paced only).
    from_schedule: Vec<Duration>,
    /// Messages refused.
    failed: usize,
    /// Messages sent later than scheduled (paced only; 1 ms slack).
    late: usize,
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

/// One session: `count` messages, back to back or paced.
async fn session(
    addr: SocketAddr,
    count: usize,
    body: &str,
    to: &str,
    pace: Option<Pace>,
) -> anyhow::Result<SessionResult> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    if reply(&mut reader).await? != 220 {
        bail!("no greeting from {addr}");
    }
    if command(&mut reader, "EHLO bench.test\r\n").await? != 250 {
        bail!("EHLO refused by {addr}");
    }
    let mut result = SessionResult {
        latencies: Vec::with_capacity(count),
        ..SessionResult::default()
    };
    for k in 0..count {
        let scheduled = pace.map(|p| p.first + p.every * k as u32);
        if let Some(at) = scheduled {
            let now = Instant::now();
            if at > now {
                tokio::time::sleep_until(at.into()).await;
            } else if now - at > Duration::from_millis(1) {
                result.late += 1;
            }
        }
        let started = Instant::now();
        let ok = command(&mut reader, "MAIL FROM:<bench@load.test>\r\n").await? == 250
            && command(&mut reader, &format!("RCPT TO:<{to}>\r\n")).await? == 250
            && command(&mut reader, "DATA\r\n").await? == 354
            && command(&mut reader, body).await? == 250;
        if ok {
            result.latencies.push(started.elapsed());
            if let Some(at) = scheduled {
                result.from_schedule.push(at.elapsed());
            }
        } else {
            result.failed += 1;
            command(&mut reader, "RSET\r\n").await?;
        }
    }
    let _ = command(&mut reader, "QUIT\r\n").await;
    Ok(result)
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
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of messages per second");
    }
    let mut body = String::from("Subject: smtp-latency\r\n\r\n");
    while body.len() < args.size {
        body.push_str("0123456789012345678901234567890123456789012345678901234567890123\r\n");
    }
    body.push_str(".\r\n");
    let started = Instant::now();
    // Paced: the schedule starts a little after now, so the sessions can
    // connect and say EHLO before their first slot.
    let first = started + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for s in 0..args.sessions {
        let share = args.count / args.sessions + usize::from(s < args.count % args.sessions);
        let addr = args.targets[s % args.targets.len()];
        let body = body.clone();
        let to = args.to.clone();
        let pace = args.rate.map(|rate| Pace {
            first: first + Duration::from_secs_f64(s as f64 / rate),
            every: Duration::from_secs_f64(args.sessions as f64 / rate),
        });
        tasks.push(tokio::spawn(async move {
            session(addr, share, &body, &to, pace).await
        }));
    }
    let mut latencies = Vec::new();
    let mut from_schedule = Vec::new();
    let (mut failed, mut late) = (0, 0);
    for task in tasks {
        let r = task.await??;
        latencies.extend(r.latencies);
        from_schedule.extend(r.from_schedule);
        failed += r.failed;
        late += r.late;
    }
    // Paced: from the first scheduled send (connecting is not load).
    let t0 = if args.rate.is_some() { first } else { started };
    let secs = t0.elapsed().as_secs_f64();
    latencies.sort();
    let mut line = format!(
        "accepted={} failed={failed} secs={secs:.2} msgs_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        latencies.len(),
        latencies.len() as f64 / secs,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    if let Some(rate) = args.rate {
        from_schedule.sort();
        line.push_str(&format!(
            " offered_per_s={rate:.0} late={late} sched_p50_ms={:.2} sched_p99_ms={:.2}",
            percentile(&from_schedule, 0.5),
            percentile(&from_schedule, 0.99),
        ));
    }
    println!("{line}");
    Ok(())
}
