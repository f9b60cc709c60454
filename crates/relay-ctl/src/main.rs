//! `relayctl`: operate a quorum-relay cluster through any node's admin gRPC.
//!
//! Owns: argument parsing, one module per subcommand, human tables and
//! `--json` output, exit codes. Must never: open RocksDB or speak Raft; all it
//! knows comes over the admin API.
//!
//! Exit codes: 0 ok, 1 the command failed, 2 usage error, 3 node unreachable
//! (or not authenticated).
//!
//! # Layout
//! - `client`: connecting with the bearer token; error → exit code.
//! - `status`: `relayctl status`.

mod client;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operate a quorum-relay cluster.
#[derive(Debug, Parser)]
#[command(name = "relayctl", version, about)]
struct Cli {
    /// Admin gRPC address of any node (host:port).
    #[arg(
        long,
        env = "RELAYCTL_ADDR",
        default_value = "127.0.0.1:7201",
        global = true
    )]
    addr: String,
    /// Admin bearer token.
    #[arg(long, env = "RELAYCTL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON for scripts instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Leader, term, every node's role, reachability, applied index and lag,
    /// and queue counts.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relayctl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let mut admin = client::connect(&cli.addr, cli.token.as_deref()).await?;
        match cli.command {
            Command::Status => status::run(&mut admin, cli.json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relayctl: {}", e.message);
            ExitCode::from(e.exit_code)
        }
    }
}
