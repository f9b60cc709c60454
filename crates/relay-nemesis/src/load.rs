//! Continuous load: several senders per node, each sending uniquely marked
//! messages one after another and recording what it was told (250,
//! refused, or cut off) in `sent.jsonl`.
//!
//! The SMTP client is a few lines on purpose: it must report exactly what
//! happened on the wire (a reply, or none), which a full client library
//! would interpret.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nemesis_check::records::{Outcome, Sent};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::record::Jsonl;
use crate::topology::DOMAIN;

/// How long one reply may take before the transaction counts as cut: well
/// above `submit_timeout` (5 s), so a node that answers at all answers.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The message with `marker` as Subject; the body length varies with `n`
/// (16 to 1,024 octets of filler, in lines of 64 so that no line comes
/// near SMTP's 1,000-octet limit).
pub fn message(marker: &str, n: u64) -> Vec<u8> {
    let filler = "0123456789abcdef"
        .repeat(1 + (n % 64) as usize)
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("ascii"))
        .collect::<Vec<_>>()
        .join("\r\n");
    format!(
        "From: <s@sender.test>\r\nTo: <r@{DOMAIN}>\r\nSubject: {marker}\r\n\
         Message-ID: <{marker}@nemesis.test>\r\n\r\nbody of {marker}\r\n{filler}\r\n"
    )
    .into_bytes()
}

struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        let mut c = Client {
            io: BufReader::new(stream),
        };
        let greeting = c.reply().await?;
        if !greeting.starts_with("220") {
            bail!("greeting {greeting}");
        }
        let ehlo = c.command("EHLO sender.test").await?;
        if !ehlo.starts_with("250") {
            bail!("EHLO {ehlo}");
        }
        Ok(c)
    }

    /// The last line of the next reply.
    async fn reply(&mut self) -> anyhow::Result<String> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.io.read_line(&mut line))
                .await
                .context("no reply in time")??;
            if n == 0 {
                bail!("connection closed");
            }
            let line = line.trim_end().to_string();
            if line.len() < 3 {
                bail!("malformed reply {line:?}");
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line);
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let w = self.io.get_mut();
        w.write_all(bytes).await?;
        w.flush().await?;
        Ok(())
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// One transaction: `Ok(reply)` with the first non-positive reply or
    /// the reply to the final dot; `Err` if the connection failed first.
    async fn transaction(&mut self, message: &[u8]) -> anyhow::Result<String> {
        for cmd in [
            "MAIL FROM:<s@sender.test>",
            &format!("RCPT TO:<r@{DOMAIN}>"),
        ] {
            let r = self.command(cmd).await?;
            if !r.starts_with('2') {
                return Ok(r);
            }
        }
        let r = self.command("DATA").await?;
        if !r.starts_with("354") {
            return Ok(r);
        }
        // The markers and bodies have no line starting with a dot.
        let mut data = message.to_vec();
        data.extend_from_slice(b".\r\n");
        self.send(&data).await?;
        self.reply().await
    }
}

/// One sender: transactions to `addr` until `stop`, each recorded.
pub async fn sender(
    addr: SocketAddr,
    node: u64,
    lane: usize,
    seed: u64,
    epoch: Instant,
    sent: Jsonl,
    stop: CancellationToken,
) {
    let mut n = 0u64;
    let mut client: Option<Client> = None;
    while !stop.is_cancelled() {
        if client.is_none() {
            match Client::connect(addr).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            }
        }
        let marker = format!("nem-{seed}-n{node}-l{lane}-{n}");
        let body = message(&marker, n);
        n += 1;
        let start = epoch.elapsed().as_millis() as u64;
        let result = client.as_mut().expect("connected").transaction(&body).await;
        let (outcome, reply) = match result {
            Ok(r) if r.starts_with("250") => (Outcome::Acked, r),
            // A refused transaction ends the session: a reply that came
            // late (or a 421 sent before closing) must never be read as
            // the answer to the next command, which would put the client
            // and the server out of step.
            Ok(r) => {
                client = None;
                (Outcome::Refused, r)
            }
            Err(e) => {
                client = None;
                (Outcome::Cut, format!("{e:#}"))
            }
        };
        let record = Sent {
            marker,
            node,
            outcome,
            reply,
            sha256: hex::encode(Sha256::digest(&body)),
            start_ms: start,
            end_ms: epoch.elapsed().as_millis() as u64,
        };
        if let Err(e) = sent.write(&record) {
            eprintln!("nemesis: cannot record a sent message: {e}");
        }
        if outcome == Outcome::Refused {
            // A refusing node (no quorum) answers fast: do not spin.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_keeps_its_lines_short_and_its_size_varies() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 0..128 {
            let m = message("nem-1-n1-l0-x", n);
            let text = String::from_utf8(m.clone()).unwrap();
            for line in text.split("\r\n") {
                assert!(
                    line.len() <= 998,
                    "message {n}: a line of {} octets",
                    line.len()
                );
                assert!(
                    !line.starts_with('.'),
                    "message {n}: a line starting with a dot"
                );
            }
            assert!(text.ends_with("\r\n"));
            sizes.insert(m.len());
        }
        assert_eq!(sizes.len(), 64, "64 different sizes");
    }
}
