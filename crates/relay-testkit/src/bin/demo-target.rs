//! `demo-target`: an accept-all SMTP sink that writes each message to a
//! directory, for the local cluster and the compose demo.
//!
//! `demo-target --listen 127.0.0.1:2600 --dir DIR` writes `DIR/<n>.eml` (the
//! message as received) and `DIR/<n>.env` (its envelope) and prints one line
//! per message. It answers `250` only after both files are synced, and
//! `451` if they cannot be written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use relay_testkit::{DirSink, MessageSink, ReceivedMessage, TargetOptions, TestTarget};

/// An accept-all SMTP target that stores each message as DIR/<n>.eml, with
/// its envelope in DIR/<n>.env.
#[derive(Debug, Parser)]
#[command(name = "demo-target", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2600")]
    listen: SocketAddr,
    /// Directory for `<n>.eml` and `<n>.env` files (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Name in the greeting and EHLO reply.
    #[arg(long, default_value = "demo-target.test")]
    hostname: String,
    /// Offer STARTTLS with a self-signed certificate.
    #[arg(long)]
    starttls: bool,
}

/// Writes with [`DirSink`] and prints one line per stored message.
struct LoggingSink(DirSink);

impl MessageSink for LoggingSink {
    fn store(&self, message: &ReceivedMessage) -> Result<(), String> {
        match self.0.write(message) {
            Ok(path) => {
                let to: Vec<String> = message.rcpt_to.iter().map(|r| format!("<{r}>")).collect();
                println!(
                    "stored {} from=<{}> to={} size={} peer={} tls={}",
                    path.display(),
                    message.mail_from,
                    to.join(","),
                    message.data.len(),
                    message.peer,
                    if message.tls { "yes" } else { "no" }
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("cannot store message from <{}>: {e}", message.mail_from);
                Err(format!("cannot store message: {e}"))
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = DirSink::open(&args.dir).context("preparing the mail directory")?;
    let target = TestTarget::start_with(TargetOptions {
        listen: args.listen,
        hostname: args.hostname,
        keep_messages: false,
        starttls: args.starttls,
        sink: Some(Arc::new(LoggingSink(sink))),
        ..TargetOptions::default()
    })
    .await
    .context("starting the SMTP listener")?;
    println!(
        "demo-target listening on {} writing to {}",
        target.addr(),
        args.dir.display()
    );
    stopped().await?;
    println!("demo-target stopping");
    target.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what `local-cluster.sh stop` sends).
async fn stopped() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    }
}
