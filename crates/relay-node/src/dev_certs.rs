//! `relayd --dev-certs DIR --nodes 1,2,3`: a development CA, one
//! certificate per node and one for `relayctl`, for `[tls] mode = "on"`.
//!
//! Files written in `DIR`:
//! - `ca.pem`, `ca-key.pem`: the CA. Kept if both exist, so running the
//!   command again issues new node certificates from the same CA (a
//!   rotation: put them in place and SIGHUP each node).
//! - `node-<id>.pem`, `node-<id>-key.pem`: DNS names `node-<id>` (the
//!   identity peers check), `localhost`, `127.0.0.1`, `::1` and any extra
//!   `--san` names; usable as server and as client certificate.
//! - `relayctl.pem`, `relayctl-key.pem`: a client certificate (name
//!   `relayctl`) for the admin port.
//!
//! Keys are written with mode 0600, each file under a temporary name and
//! then renamed. For production, issue certificates from your own CA with
//! the same names (see docs/security.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use relay_types::NodeId;

/// Why the development certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Only one of `ca.pem` / `ca-key.pem` exists.
    #[error("{present} exists but {missing} does not; remove it or restore the missing file")]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// Generating or signing failed (or the CA key does not parse).
    #[error("{0}")]
    Generate(#[from] rcgen::Error),
}

/// The CA's subject; the same every time, so a CA rebuilt from its stored
/// key issues certificates that chain to the `ca.pem` written first.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "quorum-relay development CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(
    common_name: &str,
    names: Vec<String>,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(names)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    // A fresh serial per issue: a rotated certificate differs from the old
    // one even for the same names.
    let mut serial = [0u8; 16];
    rand_serial(&mut serial)?;
    params.serial_number = Some(serial.to_vec().into());
    Ok(params)
}

/// 16 random bytes, positive as a serial number must be.
fn rand_serial(out: &mut [u8; 16]) -> Result<(), rcgen::Error> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(out)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    out[0] &= 0x7f;
    Ok(())
}

/// Writes the CA (unless present), certificates for `nodes` and the
/// `relayctl` client certificate into `dir`; returns the files written.
pub fn write(
    dir: &Path,
    nodes: &[NodeId],
    extra_names: &[String],
) -> Result<Vec<PathBuf>, DevCertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevCertError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let mut written = Vec::new();
    let ca_key = match (ca_cert_path.exists(), ca_key_path.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
            KeyPair::from_pem(&pem)?
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)
                .map_err(io(&ca_key_path))?;
            write_file(&ca_cert_path, cert.pem().as_bytes(), false).map_err(io(&ca_cert_path))?;
            written.push(ca_cert_path.clone());
            written.push(ca_key_path.clone());
            key
        }
        (true, false) => {
            return Err(DevCertError::IncompleteCa {
                present: ca_cert_path,
                missing: ca_key_path,
            });
        }
        (false, true) => {
            return Err(DevCertError::IncompleteCa {
                present: ca_key_path,
                missing: ca_cert_path,
            });
        }
    };
    let ca = ca_params().self_signed(&ca_key)?;

    let mut issue = |stem: &str, params: CertificateParams| -> Result<(), DevCertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        let key_path = dir.join(format!("{stem}-key.pem"));
        let cert_path = dir.join(format!("{stem}.pem"));
        write_file(&key_path, key.serialize_pem().as_bytes(), true).map_err(io(&key_path))?;
        write_file(&cert_path, cert.pem().as_bytes(), false).map_err(io(&cert_path))?;
        written.push(cert_path);
        written.push(key_path);
        Ok(())
    };
    for id in nodes {
        let node = relay_cluster::tls::node_name(*id);
        let mut names = vec![
            node.clone(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(extra_names.iter().cloned());
        issue(
            &node,
            leaf_params(
                &node,
                names,
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            )?,
        )?;
    }
    issue(
        "relayctl",
        leaf_params(
            "relayctl",
            vec!["relayctl".to_string()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )?,
    )?;
    Ok(written)
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_cluster::tls::{TlsFiles, TlsMaterial, certified_nodes};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn a_second_run_keeps_the_ca_and_issues_new_node_certificates() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[1, 2], &[]).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let first = std::fs::read(dir.path().join("node-1.pem")).unwrap();
        let files = |id: u64| TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join(format!("node-{id}.pem")),
            key: dir.path().join(format!("node-{id}-key.pem")),
        };
        TlsMaterial::load(&files(1)).unwrap();

        let written = write(dir.path(), &[1, 2], &["relay1.example".into()]).unwrap();
        assert!(!written.contains(&dir.path().join("ca.pem")));
        assert_eq!(ca, std::fs::read(dir.path().join("ca.pem")).unwrap());
        assert_ne!(first, std::fs::read(dir.path().join("node-1.pem")).unwrap());
        TlsMaterial::load(&files(2)).unwrap();

        let leaf = CertificateDer::from_pem_file(dir.path().join("node-2.pem")).unwrap();
        assert_eq!(certified_nodes(&leaf, [1, 2, 3]), vec![2]);
        let ctl = CertificateDer::from_pem_file(dir.path().join("relayctl.pem")).unwrap();
        assert!(certified_nodes(&ctl, [1, 2, 3]).is_empty());

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("node-1-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys must not be readable by others");
    }
}
