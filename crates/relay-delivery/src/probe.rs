//! SMTP probes without a message: the connect test for drills (greeting,
//! EHLO, QUIT: "can this node reach a working SMTP server at this target
//! right now") and the recipient verification probe (`RCPT TO` after
//! `MAIL FROM:<>`: "does the target take mail for this address"). No TLS is
//! negotiated.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::transport::parse_target;

/// The result of probing one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// `host:port` as asked.
    pub target: String,
    /// Greeting 220 and EHLO 250 received.
    pub ok: bool,
    /// The greeting line, or what went wrong, one line.
    pub detail: String,
    /// How long it took.
    pub took: Duration,
}

/// Probes `target` as `hostname`, giving up after `timeout` in total.
pub async fn probe(target: &str, hostname: &str, timeout: Duration) -> ProbeOutcome {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, exchange(target, hostname)).await;
    let (ok, detail) = match result {
        Ok(Ok(greeting)) => (true, greeting),
        Ok(Err(e)) => (false, e),
        Err(_) => (false, format!("no answer within {timeout:?}")),
    };
    ProbeOutcome {
        target: target.to_string(),
        ok,
        detail,
        took: started.elapsed(),
    }
}

/// Reads one (possibly multi-line) reply; its code and first line.
async fn reply(reader: &mut BufReader<TcpStream>) -> Result<(u16, String), String> {
    let mut first: Option<String> = None;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("connection closed by the target".into());
        }
        let line = line.trim_end().to_string();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        let first = first.get_or_insert(line);
        if last {
            return Ok((code, first.clone()));
        }
    }
}

async fn exchange(target: &str, hostname: &str) -> Result<String, String> {
    let (host, port) = parse_target(target)?;
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let mut reader = BufReader::new(stream);
    let (code, greeting) = reply(&mut reader).await?;
    if code != 220 {
        return Err(format!("greeting: {greeting}"));
    }
    reader
        .get_mut()
        .write_all(format!("EHLO {hostname}\r\n").as_bytes())
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let (code, line) = reply(&mut reader).await?;
    if code != 250 {
        return Err(format!("EHLO: {line}"));
    }
    // Best effort: the answer to QUIT changes nothing.
    let _ = reader.get_mut().write_all(b"QUIT\r\n").await;
    let _ = reply(&mut reader).await;
    Ok(greeting)
}

/// What a target said about one recipient (recipient verification).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptProbe {
    /// `RCPT TO` answered 2xx.
    Accepted,
    /// `RCPT TO` answered 5xx: the reply line.
    Refused(String),
    /// No target gave an answer (unreachable, 4xx, timeout): why.
    Failed(String),
}

/// Asks `targets` in order whether they take mail for `address`:
/// greeting, EHLO, `MAIL FROM:<>`, `RCPT TO:<address>`, QUIT. No message is
/// sent and no TLS is negotiated. A target that cannot be reached or
/// answers 4xx moves on to the next; each gets `timeout` in total.
pub async fn verify_recipient(
    targets: &[String],
    hostname: &str,
    address: &str,
    timeout: Duration,
) -> RcptProbe {
    let mut why = String::from("no targets");
    for target in targets {
        match tokio::time::timeout(timeout, rcpt_exchange(target, hostname, address)).await {
            Ok(Ok((code, _))) if (200..300).contains(&code) => return RcptProbe::Accepted,
            Ok(Ok((code, line))) if (500..600).contains(&code) => {
                return RcptProbe::Refused(line);
            }
            Ok(Ok((_, line))) => why = format!("{target}: {line}"),
            Ok(Err(e)) => why = format!("{target}: {e}"),
            Err(_) => why = format!("{target}: no answer within {timeout:?}"),
        }
    }
    RcptProbe::Failed(why)
}

/// The RCPT reply of one target (code and first line).
async fn rcpt_exchange(
    target: &str,
    hostname: &str,
    address: &str,
) -> Result<(u16, String), String> {
    let (host, port) = parse_target(target)?;
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let mut reader = BufReader::new(stream);
    let (code, greeting) = reply(&mut reader).await?;
    if code != 220 {
        return Err(format!("greeting: {greeting}"));
    }
    for (command, what) in [
        (format!("EHLO {hostname}\r\n"), "EHLO"),
        ("MAIL FROM:<>\r\n".to_string(), "MAIL"),
    ] {
        reader
            .get_mut()
            .write_all(command.as_bytes())
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let (code, line) = reply(&mut reader).await?;
        if code != 250 {
            return Err(format!("{what}: {line}"));
        }
    }
    reader
        .get_mut()
        .write_all(format!("RCPT TO:<{address}>\r\n").as_bytes())
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let answer = reply(&mut reader).await?;
    // Best effort: the answer to QUIT changes nothing.
    let _ = reader.get_mut().write_all(b"QUIT\r\n").await;
    let _ = reply(&mut reader).await;
    Ok(answer)
}
