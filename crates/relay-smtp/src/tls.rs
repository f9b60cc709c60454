//! Server TLS material for STARTTLS.
//!
//! [`load_tls`] reads a PEM certificate chain and private key.
//! [`load_or_create_tls`] does the same from `cert.pem`/`key.pem` in a
//! directory, creating a self-signed development certificate there at first
//! start (the shipped configurations use it: STARTTLS works out of the box,
//! see docs/design.md "Operator contract"). Only the ring provider is used, so no process
//! default crypto provider needs installing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server TLS configuration in use, replaceable while sessions run.
///
/// A reload (SIGHUP) builds a whole new [`ServerConfig`] first and swaps it
/// in only if that worked, so a bad file never takes STARTTLS away:
/// sessions keep the old certificate and the error names the file.
#[derive(Debug)]
pub struct ServerTls {
    current: std::sync::RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Starts with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Arc<Self> {
        Arc::new(ServerTls {
            current: std::sync::RwLock::new(config),
        })
    }

    /// The configuration for a handshake starting now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .expect("TLS config lock poisoned")
            .clone()
    }

    /// Uses `config` for every later handshake.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().expect("TLS config lock poisoned") = config;
    }
}

/// Certificate file name inside the TLS directory.
pub const CERT_FILE: &str = "cert.pem";
/// Private key file name inside the TLS directory.
pub const KEY_FILE: &str = "key.pem";

/// Why TLS could not be set up; each variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A PEM file could not be decoded.
    #[error("{path}: not a valid PEM {what}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// Decoder message.
        message: String,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    /// Only one of `cert.pem` / `key.pem` exists; refusing to overwrite it.
    #[error("{present} exists but {missing} does not; remove it or add the missing file")]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// Generating the development certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate/key pair.
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server TLS configuration from a PEM certificate chain and key.
pub fn load_tls(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let pem_err = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| match e {
            rustls::pki_types::pem::Error::Io(source) => TlsSetupError::Io { path, source },
            other => TlsSetupError::Pem {
                path,
                what,
                message: other.to_string(),
            },
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(pem_err(cert_path, "certificate"))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(cert_path, "certificate"))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem_err(key_path, "private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Loads `dir/cert.pem` and `dir/key.pem`, or creates a self-signed
/// certificate for `hostname` (and `localhost`) there if neither exists.
/// The key is written with mode 0600.
pub fn load_or_create_tls(dir: &Path, hostname: &str) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) => create_self_signed(dir, hostname, &cert, &key)?,
        (true, false) => {
            return Err(TlsSetupError::Incomplete {
                present: cert,
                missing: key,
            });
        }
        (false, true) => {
            return Err(TlsSetupError::Incomplete {
                present: key,
                missing: cert,
            });
        }
    }
    load_tls(&cert, &key)
}

fn create_self_signed(
    dir: &Path,
    hostname: &str,
    cert: &Path,
    key: &Path,
) -> Result<(), TlsSetupError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsSetupError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut names = vec![hostname.to_string()];
    if hostname != "localhost" {
        names.push("localhost".to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names)?;
    tracing::info!(dir = %dir.display(), %hostname, "created a self-signed development TLS certificate");
    // Key first, certificate last: each written to a temporary name and
    // renamed, so a crash never leaves a half-written file under the real
    // name.
    write_atomically(key, generated.key_pair.serialize_pem().as_bytes(), true).map_err(io(key))?;
    write_atomically(cert, generated.cert.pem().as_bytes(), false).map_err(io(cert))?;
    Ok(())
}

fn write_atomically(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = options.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_loads_the_same_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        load_or_create_tls(&tls_dir, "mx.test").unwrap();
        let first = std::fs::read(tls_dir.join(CERT_FILE)).unwrap();
        load_or_create_tls(&tls_dir, "mx.test").unwrap();
        assert_eq!(first, std::fs::read(tls_dir.join(CERT_FILE)).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls_dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must not be readable by others");
        }
    }

    #[test]
    fn reports_incomplete_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        let err = load_or_create_tls(dir.path(), "mx.test").unwrap_err();
        assert!(matches!(err, TlsSetupError::Incomplete { .. }), "{err}");
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = load_or_create_tls(dir.path(), "mx.test").unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
