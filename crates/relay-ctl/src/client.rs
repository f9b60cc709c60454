//! Connecting to a node's admin API and turning failures into exit codes.
//!
//! Exit codes (also in `relayctl --help` and the README):
//! 0 ok, 1 the command failed, 2 usage error, 3 no node reachable or the
//! token refused, 4 `status`: the cluster is degraded (a leader and a
//! quorum answer, but some node is down or behind), 5 `status`: the
//! cluster is down (no leader or no quorum of voters).

use std::time::Duration;

use relay_proto::admin::admin_client::AdminClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

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
            tonic::Code::Unavailable if is_transport_failure(&status) => {
                CliError::unreachable(format!("{addr} is unreachable: {}", status.message()))
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

/// Connects to the first node of `addrs` (comma-separated host:port list)
/// that accepts a connection, trying them in the order given. Only a
/// connection failure moves on to the next address: a node that answers
/// (even with an error, or a refused token) is the one asked, and a write is
/// never sent twice.
pub async fn connect(addrs: &str, token: Option<&str>) -> Result<Admin, CliError> {
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
        match connect_one(addr, token).await {
            Ok(admin) => return Ok(admin),
            Err(e) if e.exit_code == 3 => failures.push(e.message),
            Err(e) => return Err(e),
        }
    }
    Err(CliError::unreachable(failures.join("; ")))
}

/// Connects to one `addr` (host:port).
async fn connect_one(addr: &str, token: Option<&str>) -> Result<Admin, CliError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CliError::usage(format!("bad --addr {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| CliError::unreachable(format!("cannot connect to {addr}: {e}")))?;
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
