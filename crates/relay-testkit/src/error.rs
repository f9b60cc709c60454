//! Errors of the test kit.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a test helper could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The self-signed STARTTLS certificate could not be made.
    #[error("cannot create the test TLS certificate: {0}")]
    Tls(String),
    /// A sink directory could not be prepared.
    #[error("cannot use directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
