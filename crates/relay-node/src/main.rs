//! `relayd --config FILE`: runs one quorum-relay node until SIGTERM/SIGINT.
//! `relayd --hash-password`, `--dev-certs DIR`, `--print-config`,
//! `--config-reference`, `--completions SHELL` and `--man` are helpers
//! that print or write something and exit; `relayd --config FILE
//! --recover` turns a stopped node into a new one-voter cluster after a
//! quorum loss.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use relay_node::NodeConfig;
use tokio_util::sync::CancellationToken;

/// A quorum-relay node: replicated store-and-forward SMTP relay.
#[derive(Debug, Parser)]
#[command(name = "relayd", version, about)]
struct Args {
    /// The node's TOML configuration file.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = [
            "hash_password", "health_check", "dev_certs", "config_reference", "completions", "man"
        ]
    )]
    config: Option<PathBuf>,
    /// Read a password from standard input (one line) and print its argon2
    /// hash for `[smtp.auth] users`, then exit.
    #[arg(long, conflicts_with_all = ["config", "check_config", "dev_certs"])]
    hash_password: bool,
    /// Probe a running service and exit 0 if it is healthy, 1 if not:
    /// `http://HOST:PORT/PATH` wants a 2xx answer (e.g. `/readyz`),
    /// `smtp://HOST:PORT` a 220 greeting. For container health checks.
    #[arg(long, value_name = "URL", conflicts_with_all = ["config", "check_config", "hash_password"])]
    health_check: Option<String>,
    /// Write a development CA (kept if DIR already has one), a certificate
    /// per node of --nodes and one for relayctl into DIR, for
    /// `[tls] mode = "on"`; then exit.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "check_config"])]
    dev_certs: Option<PathBuf>,
    /// With --dev-certs: the node ids to issue certificates for.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "dev_certs",
        default_value = "1,2,3"
    )]
    nodes: Vec<u64>,
    /// With --dev-certs: another DNS name or IP address for every node
    /// certificate (repeatable; `node-<id>`, localhost and loopback are
    /// always in).
    #[arg(long = "san", value_name = "NAME", requires = "dev_certs")]
    extra_names: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Only validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the effective configuration of --config and exit: every key
    /// with its value, defaults marked `# default`, secrets masked, unset
    /// optional keys as comments (like `postconf`). Checks the file's
    /// syntax and keys, not its values (that is --check-config).
    #[arg(long, conflicts_with = "check_config")]
    print_config: bool,
    /// With --print-config: only the keys the file sets (like `postconf -n`).
    #[arg(long, requires = "print_config")]
    explicit: bool,
    /// Print the reference of every configuration key (Markdown, with
    /// defaults; docs/configuration.md is this output) and exit.
    #[arg(long, conflicts_with_all = ["config", "check_config", "print_config"])]
    config_reference: bool,
    /// Print a shell completion script for relayd and exit.
    #[arg(long, value_name = "SHELL", value_enum, conflicts_with = "config")]
    completions: Option<clap_complete::Shell>,
    /// Print relayd's man page (roff) and exit.
    #[arg(long, conflicts_with = "config")]
    man: bool,
    /// Recovery after the quorum is lost for good: print what this node's
    /// store holds and what a new one-voter cluster made from it would
    /// lack; with --confirm, keep that as evidence in the data dir and
    /// make this node the only voter of a new cluster (see
    /// docs/disaster-recovery.md). The node must be stopped.
    #[arg(long, requires = "config", conflicts_with = "check_config")]
    recover: bool,
    /// With --recover: do it (without, it is a dry run that changes
    /// nothing and exits 1).
    #[arg(long, requires = "recover")]
    confirm: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.hash_password {
        return hash_password();
    }
    if let Some(url) = &args.health_check {
        return health_check(url);
    }
    if let Some(shell) = args.completions {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Args::command(), "relayd", &mut script);
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return ExitCode::SUCCESS;
    }
    if args.man {
        let mut page = Vec::new();
        if let Err(e) = clap_mangen::Man::new(Args::command()).render(&mut page) {
            eprintln!("relayd: cannot render the man page: {e}");
            return ExitCode::FAILURE;
        }
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &page);
        return ExitCode::SUCCESS;
    }
    if args.config_reference {
        // A closed pipe (`| head`) is not an error worth a message.
        let reference = relay_node::config::reference_markdown();
        let _ = std::io::Write::write_all(&mut std::io::stdout(), reference.as_bytes());
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &args.dev_certs {
        return match relay_node::dev_certs::write(dir, &args.nodes, &args.extra_names) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relayd: cannot write development certificates: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config_path = args.config.expect("clap requires --config");
    if args.print_config {
        return print_config(&config_path, args.explicit);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn")
    });
    // Colours only on a terminal: log files, journald and `docker logs`
    // get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }

    // Every SMTP session is a file descriptor: use the hard limit, as
    // Postfix's master does, so 10,000 idle sessions fit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }

    let config = match NodeConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relayd: invalid configuration:\n{e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}: ok", config_path.display());
        return ExitCode::SUCCESS;
    }
    if args.recover {
        return relay_node::recover::run(&config, args.confirm);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relayd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            signals.cancel();
        });
        relay_node::node::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relayd: {e:#}");
            exit_status(&e)
        }
    }
}

/// The status for a node that stopped with `e` (the table is in README
/// "Operating" and `relay_node::supervise`): 3 when the store needs an
/// operator (a restart would fail the same way), 1 otherwise.
fn exit_status(e: &anyhow::Error) -> ExitCode {
    let needs_operator = e.chain().any(|cause| {
        cause
            .downcast_ref::<relay_store::StoreError>()
            .is_some_and(relay_store::StoreError::needs_operator)
    });
    if needs_operator {
        ExitCode::from(3)
    } else {
        ExitCode::FAILURE
    }
}

/// `--print-config`: the effective configuration on stdout; exit 2 when
/// the file cannot be read or has an unknown key or a wrong type.
fn print_config(path: &std::path::Path, explicit: bool) -> ExitCode {
    let printed = std::fs::read_to_string(path)
        .map_err(|source| relay_node::ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
        .and_then(|text| relay_node::config::print_effective(path, &text, explicit));
    match printed {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relayd: invalid configuration:\n{e}");
            ExitCode::from(2)
        }
    }
}

/// `--hash-password`: one line from stdin → an argon2id PHC string.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("relayd: cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("relayd: empty password");
        return ExitCode::from(2);
    }
    println!("{}", relay_smtp::auth::hash_password(password));
    ExitCode::SUCCESS
}

/// `--health-check URL`: one probe, its answer on stdout (healthy) or
/// stderr (not), exit 0 or 1.
fn health_check(url: &str) -> ExitCode {
    use relay_node::check::{CheckError, health_check};
    match health_check(url, std::time::Duration::from_secs(3)) {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e @ CheckError::BadUrl(_)) => {
            eprintln!("relayd: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("relayd: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
