//! Connecting to a node's admin API and turning failures into exit codes.
//!
//! Exit codes (also in `relayctl --help` and the README):
//! 0 ok, 1 the command failed, 2 usage error, 3 no node reachable or the
//! token refused, 4 `status`: the cluster is degraded (a leader and a
//! quorum answer, but some node is down or behind), 5 `status`: the
//! cluster is down (no leader or no quorum of voters).

use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_proto::admin::admin_client::AdminClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub exit_code: u8,
}

impl CliError {
    /// Exit 1: the command failed.
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            exit_code: 1,
        }
    }

    /// Exit 2: the request itself is wrong (bad id, unknown state, ...).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            exit_code: 2,
        }
    }

    /// Exit 4 (`status`): the cluster works but a node is down or behind.
    /// The status itself is already printed, so no message.
    pub fn degraded() -> Self {
        CliError {
            message: String::new(),
            exit_code: 4,
        }
    }

    /// Exit 5 (`status`): no leader or no quorum of voters. The status itself
    /// is already printed, so no message.
    pub fn down() -> Self {
        CliError {
            message: String::new(),
            exit_code: 5,
        }
    }

    /// Exit 3: could not reach or authenticate to the node.
    pub fn unreachable(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            exit_code: 3,
        }
    }

    /// Maps a gRPC status from `addr` to an error.
    pub fn from_status(addr: &str, status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated => CliError::unreachable(format!(
                "{addr} refused the admin token ({}); set --token or RELAYCTL_TOKEN",
                status.message()
            )),
            // A node that answers UNAVAILABLE itself (no leader, no quorum)
            // is reachable; the command failed. Transport failures carry
            // tonic's own messages.
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
                if is_transport_failure(&status) =>
            {
                CliError::unreachable(format!(
                    "{addr} is unreachable: {} (a node with [tls] mode = \"on\" needs --ca, \
                     and --cert/--key when it requires client certificates)",
                    status.message()
                ))
            }
            tonic::Code::DeadlineExceeded => CliError::unreachable(format!(
                "{addr} did not answer in time: {}",
                status.message()
            )),
            tonic::Code::InvalidArgument => CliError::usage(status.message().to_string()),
            tonic::Code::NotFound => CliError::failed(status.message().to_string()),
            _ => CliError::failed(format!("{addr}: {}", status.message())),
        }
    }
}

/// True when the status comes from the client's transport (connection
/// refused, reset), not from the node's own answer.
fn is_transport_failure(status: &tonic::Status) -> bool {
    let m = status.message();
    m.contains("transport error")
        || m.contains("error trying to connect")
        || m.contains("connection")
        || m.contains("tcp connect")
        // Plaintext HTTP/2 against a TLS port, or a TLS session the server
        // ended after the handshake (TLS 1.3: client certificate refused).
        || m.contains("h2 protocol error")
        || m.contains("operation was canceled")
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone, Debug)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// An admin client with its address, for error messages.
pub struct Admin {
    pub addr: String,
    pub client: AdminClient<InterceptedService<Channel, Bearer>>,
}

/// The admin token: `--token`, or the first line of `--token-file`.
pub fn token(token: Option<String>, file: Option<&Path>) -> Result<Option<String>, CliError> {
    match (token, file) {
        (Some(t), _) => Ok(Some(t)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::usage(format!("--token-file {}: cannot read: {e}", path.display()))
            })?;
            Ok(Some(text.lines().next().unwrap_or("").trim().to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// TLS to the admin port: the CA to trust, and optionally a client
/// certificate (all PEM, read at start).
#[derive(Debug)]
pub struct TlsFiles {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl TlsFiles {
    /// From `--ca`, `--cert`, `--key`, `--server-name`; `None` without a CA.
    pub fn from_args(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        server_name: Option<String>,
    ) -> Result<Option<TlsFiles>, CliError> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                CliError::usage(format!("--{flag} {}: cannot read: {e}", path.display()))
            })
        };
        let Some(ca) = ca else {
            if cert.is_some() {
                return Err(CliError::usage(
                    "--cert/--key need --ca (the cluster CA that signed the node certificates)",
                ));
            }
            return Ok(None);
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((read("cert", &cert)?, read("key", &key)?)),
            _ => None,
        };
        Ok(Some(TlsFiles {
            ca: read("ca", &ca)?,
            identity,
            server_name,
        }))
    }
}

/// Connects to the first node of `addrs` (comma-separated host:port list)
/// that accepts a connection, trying them in the order given. Only a
/// connection failure moves on to the next address: a node that answers
/// (even with an error, or a refused token) is the one asked, and a write is
/// never sent twice.
pub async fn connect(
    addrs: &str,
    token: Option<&str>,
    tls: Option<&TlsFiles>,
) -> Result<Admin, CliError> {
    let list: Vec<&str> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if list.is_empty() {
        return Err(CliError::usage("--addr names no address"));
    }
    let mut failures = Vec::new();
    for addr in &list {
        match connect_one(addr, token, tls).await {
            Ok(admin) => return Ok(admin),
            Err(e) if e.exit_code == 3 => failures.push(e.message),
            Err(e) => return Err(e),
        }
    }
    Err(CliError::unreachable(failures.join("; ")))
}

/// Connects to one `addr` (host:port): `https://` with `tls`, else `http://`.
async fn connect_one(
    addr: &str,
    token: Option<&str>,
    tls: Option<&TlsFiles>,
) -> Result<Admin, CliError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| CliError::failed(format!("bad --addr {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    if let Some(tls) = tls {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| CliError::usage(format!("TLS settings: {e}")))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        CliError::unreachable(format!("cannot connect to {addr}: {}", error_chain(&e)))
    })?;
    let bearer = match token {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
            CliError::failed("the token contains characters not allowed in a header")
        })?),
        None => None,
    };
    Ok(Admin {
        addr: addr.to_string(),
        client: AdminClient::with_interceptor(channel, Bearer(bearer)),
    })
}

/// An error and its causes on one line (a TLS failure's reason is a few
/// sources down: "transport error: ... invalid peer certificate: ...").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
