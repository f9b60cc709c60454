//! A throw-away self-signed certificate for the target's STARTTLS.
//!
//! Clients that verify certificates must fail against it, which is exactly
//! what tests of `TlsPolicy::Required` want; opportunistic clients encrypt
//! without verifying.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::TestkitError;

/// An acceptor with a fresh self-signed certificate for `hostname`,
/// `localhost`, `127.0.0.1` and `::1`, using only the ring provider, and
/// the certificate in PEM (for clients that want to trust it).
pub(crate) fn self_signed_acceptor(hostname: &str) -> Result<(TlsAcceptor, String), TestkitError> {
    let tls_err = |e: &dyn std::fmt::Display| TestkitError::Tls(e.to_string());
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    if !names.iter().any(|n| n == hostname) {
        names.push(hostname.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| tls_err(&e))?;
    let pem = generated.cert.pem();
    let cert = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| tls_err(&e))?;
    Ok((TlsAcceptor::from(Arc::new(config)), pem))
}
