//! Mutual TLS on the node-to-node port (and the server half the admin port
//! reuses): who may talk to whom, checked on both ends.
//!
//! What is verified:
//! - every peer certificate chains to the cluster CA (rustls/webpki, ring
//!   only), on both ends: a plaintext client or one with a certificate from
//!   another CA fails the handshake;
//! - the client checks that the server it dialled is the node it meant:
//!   the server certificate must be valid for the name `node-<id>` of the
//!   member whose address it dialled ([`node_name`]);
//! - the server checks, per RPC, that the client certificate is valid for
//!   `node-<id>` of some member (voters, learners, or the configured
//!   initial members), and the Raft RPCs check that the node id the
//!   request claims to come from is one the certificate names
//!   ([`PeerNodes`]).
//!
//! Reload: [`ClusterTls::reload`] swaps in new material built from files
//! (SIGHUP on the node). Handshakes starting afterwards use it; connections
//! already open keep their session. Clients notice the new generation and
//! build fresh channels (see `channels`), so a rotated certificate is in
//! use on both ends without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use relay_types::NodeId;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The DNS name a node's certificate carries in its subject alternative
/// names, e.g. `node-2`. Peers are checked against it on both ends.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// How long a TLS handshake on an accepted connection may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight per listener; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 128;

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s): peers must chain to it.
    pub ca: PathBuf,
    /// This node's certificate chain (leaf first).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// Why TLS material could not be loaded or used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or decoded.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The pieces do not form a usable configuration (key does not match
    /// the certificate, CA unusable, ...).
    #[error("{0}")]
    Config(String),
}

/// Loaded certificates and key: everything both ends need.
#[derive(Debug)]
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Whether a server asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate from the CA is required (mTLS).
    Required,
    /// No client certificate is asked for.
    None,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            message: format!("not a valid PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Reads and checks the three files: each decodes, the CA is usable as
    /// a trust anchor, and the key matches the certificate.
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, TlsError> {
        let ca_pem = read(&files.ca)?;
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&files.ca, &ca_pem)? {
            roots.add(ca).map_err(|e| TlsError::File {
                path: files.ca.clone(),
                message: format!("not usable as a CA: {e}"),
            })?;
        }
        let chain = certs(&files.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
            path: files.key.clone(),
            message: format!("not a valid PEM private key: {e}"),
        })?;
        let material = TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            chain,
            key,
        };
        // Builds (and so checks) the certificate/key pair once.
        material.server_config(ClientAuth::Required).map_err(|e| {
            TlsError::Config(format!(
                "{} and {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
        Ok(material)
    }

    /// A server configuration: this node's certificate, HTTP/2 by ALPN,
    /// and client certificates from the CA when `client_auth` says so.
    pub fn server_config(
        &self,
        client_auth: ClientAuth,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_auth {
            ClientAuth::Required => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
                        .build()
                        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            ClientAuth::None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration for tonic: trust only the CA, present this
    /// node's certificate, and require the server to be `server_name`.
    pub fn client_config(&self, server_name: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .domain_name(server_name)
    }
}

/// A server configuration that can be replaced while connections come in.
#[derive(Debug)]
pub struct ReloadableServerConfig {
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ReloadableServerConfig {
    /// Starts with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Arc<Self> {
        Arc::new(ReloadableServerConfig {
            current: RwLock::new(config),
        })
    }

    /// The configuration for a handshake starting now.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .expect("TLS config lock poisoned")
            .clone()
    }

    /// Uses `config` for every later handshake.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.current.write().expect("TLS config lock poisoned") = config;
    }
}

/// The node-to-node TLS state: the server configuration (client
/// certificates required) and the material clients dial with.
#[derive(Debug)]
pub struct ClusterTls {
    server: Arc<ReloadableServerConfig>,
    client: RwLock<(Arc<TlsMaterial>, u64)>,
}

impl ClusterTls {
    /// mTLS with `material`.
    pub fn new(material: Arc<TlsMaterial>) -> Result<Arc<Self>, TlsError> {
        let server = ReloadableServerConfig::new(material.server_config(ClientAuth::Required)?);
        Ok(Arc::new(ClusterTls {
            server,
            client: RwLock::new((material, 0)),
        }))
    }

    /// Uses `material` for every later handshake, server and client side.
    pub fn reload(&self, material: Arc<TlsMaterial>) -> Result<(), TlsError> {
        let server = material.server_config(ClientAuth::Required)?;
        self.server.replace(server);
        let mut client = self.client.write().expect("TLS material lock poisoned");
        let generation = client.1 + 1;
        *client = (material, generation);
        Ok(())
    }

    /// The server side.
    pub fn server(&self) -> &Arc<ReloadableServerConfig> {
        &self.server
    }

    /// The client configuration for dialling node `peer`, and the
    /// generation of the material it was built from.
    pub fn client_config(&self, peer: NodeId) -> (tonic::transport::ClientTlsConfig, u64) {
        let client = self.client.read().expect("TLS material lock poisoned");
        (client.0.client_config(&node_name(peer)), client.1)
    }

    /// The current material generation (bumped by every reload).
    pub fn generation(&self) -> u64 {
        self.client.read().expect("TLS material lock poisoned").1
    }
}

/// The member ids a verified client certificate is valid for, placed in
/// the request extensions by the node-to-node server's interceptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerNodes(pub Vec<NodeId>);

/// Which of `candidates` the end-entity certificate `cert` names (DNS SAN
/// `node-<id>`). The chain itself was verified in the handshake.
pub fn certified_nodes(
    cert: &CertificateDer<'_>,
    candidates: impl IntoIterator<Item = NodeId>,
) -> Vec<NodeId> {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    candidates
        .into_iter()
        .filter(|id| {
            ServerName::try_from(node_name(*id))
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
        .collect()
}

/// TLS connections accepted on `listener` with the configuration current
/// at each handshake, for `tonic::transport::Server::serve_with_incoming`.
/// Handshakes run concurrently (at most [`MAX_HANDSHAKES`], each within
/// [`HANDSHAKE_TIMEOUT`]); a failed one (plaintext, unknown CA, no client
/// certificate) is logged and dropped. Stops at `shutdown`.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ReloadableServerConfig>,
    shutdown: CancellationToken,
    what: &'static str,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(error = %e, what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let _ = tx.send(Ok(tls_stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, what, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::info!(%peer, what, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_only_its_own_node() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["node-2".to_string(), "localhost".to_string()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        assert_eq!(certified_nodes(&der, [1, 2, 3, 22]), vec![2]);
        assert!(certified_nodes(&CertificateDer::from(vec![1, 2, 3]), [2]).is_empty());
    }
}
