//! `relayctl`: operate a quorum-relay cluster through any node's admin gRPC.
//!
//! Owns: argument parsing, one module per subcommand, human tables and
//! `--json` output, exit codes. Must never: open RocksDB or speak Raft; all it
//! knows comes over the admin API.
//!
//! Exit codes: 0 ok, 1 the command failed (or a drill found a red check),
//! 2 usage error, 3 node unreachable (or not authenticated), 4 `status`
//! found the cluster degraded, 5 `status` found it down (see `client`).
//!
//! # Layout
//! - `client`: connecting (TLS with --ca, client certificate with
//!   --cert/--key) with the bearer token; error → exit code.
//! - `output`: tables, human sizes and ages, JSON.
//! - `status`: `relayctl status`.
//! - `queue`: `relayctl queue list|summary|show|hold|release|delete|flush`,
//!   one file per subcommand.
//! - `route`: `relayctl route list|set|remove`.
//! - `member`: `relayctl member list|add|promote|remove`, `failover` and
//!   `snapshot`.
//! - `drain`: `relayctl member drain|undrain|drain-status`.
//! - `trace`: `relayctl trace ID`.
//! - `drill`: `relayctl drill`.
//! - `generate`: `relayctl completions SHELL` and `relayctl man`, from
//!   these clap definitions (no node is asked).

mod client;
mod drain;
mod drill;
mod generate;
mod member;
mod output;
mod queue;
mod route;
mod status;
mod trace;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Exit codes, shown by `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  the command failed (a drill found a red check, a named message did not change)
  2  usage error
  3  no node reachable, or the admin token was refused
  4  status: degraded (leader and quorum, but a node is down or lags)
  5  status: down (no leader, or no quorum of voters)

Output to a closed pipe (| head, | grep -q) ends quietly with status 0.";

/// Operate a quorum-relay cluster.
#[derive(Debug, Parser)]
#[command(name = "relayctl", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Admin gRPC address of any node (host:port), or several,
    /// comma-separated: each is tried in turn until one accepts the
    /// connection.
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
    /// Read the admin token from this file (first line); --token wins if
    /// both are given.
    #[arg(long, env = "RELAYCTL_TOKEN_FILE", value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The cluster CA (PEM): connect with TLS (`https://`) and accept only
    /// a node certificate from this CA.
    #[arg(long, env = "RELAYCTL_CA", value_name = "FILE", global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that require one on the admin
    /// port; needs --key and --ca.
    #[arg(
        long,
        env = "RELAYCTL_CERT",
        value_name = "FILE",
        global = true,
        requires = "key"
    )]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "RELAYCTL_KEY",
        value_name = "FILE",
        global = true,
        requires = "cert"
    )]
    key: Option<PathBuf>,
    /// The name the node's certificate must carry (default: the host of
    /// --addr).
    #[arg(long, env = "RELAYCTL_SERVER_NAME", value_name = "NAME", global = true)]
    server_name: Option<String>,
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
    /// List, inspect, hold, release, delete or flush queued messages.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Per-domain routes, cluster-wide.
    #[command(subcommand)]
    Route(route::RouteCommand),
    /// Cluster membership.
    #[command(subcommand, after_long_help = member::REPLACE_A_NODE)]
    Member(member::MemberCommand),
    /// Move leadership to another voter.
    Failover(member::FailoverArgs),
    /// A message's replicated history.
    Trace(trace::TraceArgs),
    /// Check replicas, settings and route targets; exit 0 only if all pass.
    Drill(drill::DrillArgs),
    /// Build a snapshot on the node asked (--addr) now.
    Snapshot,
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `relayctl completions bash >
    /// /etc/bash_completion.d/relayctl`.
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff), or write one page per subcommand into
    /// --dir.
    Man(generate::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the definitions above; no node is asked.
    let generated = match &cli.command {
        Command::Completions(args) => Some(generate::completions(Cli::command(), args)),
        Command::Man(args) => Some(generate::man(Cli::command(), args)),
        _ => None,
    };
    if let Some(result) = generated {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "relayctl: {}", e.message);
                ExitCode::from(e.exit_code)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "relayctl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        if let Command::Queue(c) = &cli.command {
            c.validate()?;
        }
        let token = client::token(cli.token, cli.token_file.as_deref())?;
        let tls = client::TlsFiles::from_args(cli.ca, cli.cert, cli.key, cli.server_name)?;
        let mut admin = client::connect(&cli.addr, token.as_deref(), tls.as_ref()).await?;
        let admin = &mut admin;
        match cli.command {
            Command::Status => status::run(admin, cli.json).await,
            Command::Queue(c) => queue::run(admin, c, cli.json).await,
            Command::Route(c) => route::run(admin, c, cli.json).await,
            Command::Member(c) => member::run(admin, c, cli.json).await,
            Command::Failover(a) => member::failover(admin, a, cli.json).await,
            Command::Trace(a) => trace::run(admin, a, cli.json).await,
            Command::Drill(a) => drill::run(admin, a, cli.json).await,
            Command::Snapshot => member::snapshot(admin, cli.json).await,
            Command::Completions(_) | Command::Man(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                let _ = writeln!(std::io::stderr(), "relayctl: {}", e.message);
            }
            ExitCode::from(e.exit_code)
        }
    }
}
