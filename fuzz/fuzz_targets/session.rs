//! The whole inbound SMTP state machine: `relay_smtp::run_session` over an
//! in-memory duplex stream, fed an arbitrary client byte stream in arbitrary
//! chunks, with a recording backend. STARTTLS is offered (self-signed
//! certificate from relay_smtp's own `load_or_create_tls`) when the input
//! asks for it, and BDAT is always offered.
//!
//! Input layout: `[flags, arg, cut0, cut1, cut2, cut3, client bytes…]`.
//! flags: 1 client in the authorized networks, 2 TLS configured,
//! 4 the backend fails every second submit (`arg` bits 4-5 pick the error),
//! 8 shutdown fires before chunk `arg & 7`, 16 a real rustls client upgrades
//! after the first `STARTTLS` line and sends the rest encrypted, 32 small
//! limits, 64 (with 16) plaintext commands are pipelined right after
//! `STARTTLS`, 128 AUTH is configured (user `user`, password `pass`, a
//! cheap argon2 hash; the failure limit is off so runs stay independent).
//! Cuts are chunk lengths used cyclically.
//!
//! Time is tokio's paused clock on one current-thread runtime: a stalled
//! session reaches its timeout at once, so every run ends.
//!
//! Properties:
//! - the session never panics and always ends;
//! - every submitted body starts with our `Received:` header, has CRLF-only
//!   line ends and no NUL, ends with CRLF, and its client part is within the
//!   size limit; the info size is the stored size;
//! - every submission has 1..=max_recipients distinct recipients, and from
//!   outside the authorized networks without a login each is a plain
//!   mailbox in the relay domain (as delivery will route it);
//! - a message carries a login only if AUTH is configured, the session was
//!   upgraded to TLS, and the login is the configured user (sent over TLS);
//! - `250 … queued as <id>` is sent exactly for the submissions the backend
//!   accepted, in order, with their ids (none for failed submits);
//! - every reply line is `ddd` + space/dash + text + CRLF;
//! - after a real STARTTLS, nothing learnt in clear survives: no command
//!   pipelined in clear is executed, messages carry `ESMTPS`, and their
//!   HELO name and recipients were all sent over TLS.
#![no_main]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use relay_smtp::address::Mailbox;
use relay_smtp::auth::{AuthFailures, Credentials, SmtpAuth};
use relay_smtp::{ServerTls, SessionBackend, SmtpConfig, Submission, SubmitError, run_session};
use relay_types::Recipient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const RELAY_DOMAIN: &str = "example.test";
const INJECTED: &str = "injected@evil.test";
const USER: &str = "user";

struct Setup {
    rt: Runtime,
    /// The configurations, by `[tls configured][small limits][auth]`.
    configs: [[[Arc<SmtpConfig>; 2]; 2]; 2],
    connector: TlsConnector,
}

fn config(
    tls: Option<Arc<ServerTls>>,
    small: bool,
    auth: Option<Arc<SmtpAuth>>,
) -> Arc<SmtpConfig> {
    let mut config = SmtpConfig {
        hostname: "mx.test".into(),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        tls_handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
        tls,
        auth,
        ..SmtpConfig::default()
    };
    if small {
        config.max_message_size = 400;
        config.max_recipients = 2;
        config.max_command_line = 64;
        config.max_text_line = 40;
        config.max_header_size = 120;
        config.max_errors = 4;
    }
    Arc::new(config)
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = relay_smtp::load_or_create_tls(dir.path(), "mx.test").expect("self-signed");
        let cert = CertificateDer::from_pem_file(dir.path().join("cert.pem")).expect("cert");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = ServerTls::new(tls);
        // A cheap argon2 hash (m=8 KiB, t=1), so a correct login costs
        // microseconds; unknown users still pay for relay-smtp's decoy.
        let params = argon2::Params::new(8, 1, 1, None).expect("params");
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = argon2::password_hash::SaltString::encode_b64(b"fuzz-salt-16byte").unwrap();
        let hash = argon2::PasswordHasher::hash_password(&hasher, b"pass", &salt)
            .expect("hash")
            .to_string();
        let auth = Arc::new(SmtpAuth {
            credentials: Credentials::new([(USER.to_string(), hash)].into()).expect("creds"),
            failures: AuthFailures::new(u32::MAX, Duration::from_secs(300)),
        });
        let c =
            |t: bool, s: bool, a: bool| config(t.then(|| tls.clone()), s, a.then(|| auth.clone()));
        Setup {
            rt,
            configs: [false, true]
                .map(|t| [false, true].map(|s| [false, true].map(|a| c(t, s, a)))),
            connector: TlsConnector::from(Arc::new(client)),
        }
    })
}

/// Records accepted submissions; optionally fails every second submit.
struct Backend {
    accepted: Mutex<Vec<Submission>>,
    calls: AtomicUsize,
    fail: Option<SubmitError>,
}

impl SessionBackend for Backend {
    fn is_relay_domain(&self, domain: &str) -> bool {
        domain == RELAY_DOMAIN
    }

    fn submit(
        &self,
        submission: Submission,
    ) -> impl Future<Output = Result<(), SubmitError>> + Send {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let result = match &self.fail {
            Some(e) if n % 2 == 1 => Err(e.clone()),
            _ => {
                self.accepted.lock().unwrap().push(submission);
                Ok(())
            }
        };
        async move {
            tokio::task::yield_now().await;
            result
        }
    }
}

struct Case<'a> {
    authorized: bool,
    tls_configured: bool,
    real_tls: bool,
    inject: bool,
    shutdown_at: Option<usize>,
    cuts: &'a [u8],
    stream: &'a [u8],
}

fn chunks<'a>(stream: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = usize::from(cuts[i % cuts.len()]).max(1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// Writes chunks, letting the session run between them; fires the shutdown
/// token before chunk `shutdown_at`.
async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream: &[u8],
    cuts: &[u8],
    shutdown_at: &mut Option<usize>,
    token: &CancellationToken,
) {
    for chunk in chunks(stream, cuts) {
        if *shutdown_at == Some(0) {
            token.cancel();
        }
        *shutdown_at = shutdown_at.map(|k| k.wrapping_sub(1));
        if w.write_all(chunk).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out).await;
    out
}

/// Client-side view of one session.
struct Outcome {
    /// Replies sent in clear (up to `220 … Ready to start TLS` if any).
    plain: Vec<u8>,
    /// Replies read over TLS after a real upgrade.
    tls: Option<Vec<u8>>,
    /// Submissions accepted before the upgrade.
    before_tls: usize,
    /// The client bytes sent over TLS.
    tls_stream: Vec<u8>,
}

/// Splits after the first line that is `STARTTLS` (any case).
fn split_at_starttls(stream: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < stream.len() {
        let end = stream[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(stream.len(), |i| pos + i + 1);
        if stream[pos..end].eq_ignore_ascii_case(b"STARTTLS\r\n") {
            return Some(end);
        }
        pos = end;
    }
    None
}

async fn drive(case: &Case<'_>, config: Arc<SmtpConfig>, backend: Arc<Backend>) -> Outcome {
    let setup = setup();
    let (mut client, server) = tokio::io::duplex(1 << 22);
    let token = CancellationToken::new();
    let peer: SocketAddr = if case.authorized {
        "127.0.0.1:40000".parse().unwrap()
    } else {
        "192.0.2.10:40000".parse().unwrap()
    };
    let session = tokio::spawn(run_session(
        server,
        peer,
        config,
        backend.clone(),
        token.clone(),
    ));
    let mut shutdown_at = case.shutdown_at;
    let split = if case.real_tls && case.tls_configured {
        split_at_starttls(case.stream)
    } else {
        None
    };
    let outcome = match split {
        None => {
            let (mut r, mut w) = tokio::io::split(client);
            let reader = tokio::spawn(async move { read_all(&mut r).await });
            send(&mut w, case.stream, case.cuts, &mut shutdown_at, &token).await;
            let _ = w.shutdown().await;
            Outcome {
                plain: reader.await.expect("reader"),
                tls: None,
                before_tls: 0,
                tls_stream: Vec::new(),
            }
        }
        Some(at) => {
            let (clear, rest) = case.stream.split_at(at);
            send(&mut client, clear, case.cuts, &mut shutdown_at, &token).await;
            if case.inject {
                let injected = format!(
                    "EHLO evil\r\nMAIL FROM:<{INJECTED}>\r\nRCPT TO:<a@{RELAY_DOMAIN}>\r\n"
                );
                let _ = client.write_all(injected.as_bytes()).await;
            }
            // Read replies until the go-ahead (or the end of the session).
            let ready = b"220 2.0.0 Ready to start TLS\r\n";
            let mut plain = Vec::new();
            let mut buf = [0u8; 4096];
            let upgraded = loop {
                if plain.windows(ready.len()).any(|w| w == ready) {
                    break true;
                }
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                }
            };
            let before_tls = backend.accepted.lock().unwrap().len();
            if !upgraded {
                Outcome {
                    plain,
                    tls: None,
                    before_tls,
                    tls_stream: Vec::new(),
                }
            } else {
                let name = ServerName::try_from("mx.test").unwrap();
                match setup.connector.connect(name, client).await {
                    Err(_) => Outcome {
                        plain,
                        tls: Some(Vec::new()),
                        before_tls,
                        tls_stream: Vec::new(),
                    },
                    Ok(tls) => {
                        let (mut r, mut w) = tokio::io::split(tls);
                        let reader = tokio::spawn(async move { read_all(&mut r).await });
                        send(&mut w, rest, case.cuts, &mut shutdown_at, &token).await;
                        let _ = w.shutdown().await;
                        Outcome {
                            plain,
                            tls: Some(reader.await.expect("reader")),
                            before_tls,
                            tls_stream: rest.to_vec(),
                        }
                    }
                }
            }
        }
    };
    session.await.expect("session task");
    outcome
}

/// Checks reply syntax; returns the ids in `250 2.0.0 Ok: queued as <id>`.
fn replies(out: &[u8], stop_at_tls_ready: bool) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            panic!("reply without CRLF: {:?}", String::from_utf8_lossy(rest));
        };
        let line = &rest[..end];
        rest = &rest[end + 2..];
        assert!(
            line.len() >= 3
                && line[..3].iter().all(u8::is_ascii_digit)
                && matches!(line.get(3), None | Some(b' ') | Some(b'-')),
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
        if let Some(id) = line.strip_prefix(b"250 2.0.0 Ok: queued as ") {
            ids.push(String::from_utf8(id.to_vec()).expect("ascii id"));
        }
        if stop_at_tls_ready && line == b"220 2.0.0 Ready to start TLS" {
            break;
        }
    }
    ids
}

/// The `Received:` header: up to the first CRLF not followed by folding.
fn received_len(body: &[u8]) -> usize {
    let mut i = 0;
    while let Some(p) = body[i..].windows(2).position(|w| w == b"\r\n") {
        i += p + 2;
        if !matches!(body.get(i), Some(b' ' | b'\t')) {
            return i;
        }
    }
    panic!("no end of the Received header");
}

fn check_submission(s: &Submission, case: &Case<'_>, config: &SmtpConfig) {
    let body = &s.body[..];
    assert!(body.starts_with(b"Received: from "), "no Received header");
    assert!(body.ends_with(b"\r\n"), "body does not end with CRLF");
    assert!(!body.contains(&0), "NUL in a stored body");
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && body[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    let client_part = body.len() - received_len(body);
    assert!(
        client_part as u64 <= config.max_message_size,
        "over the size limit"
    );
    assert_eq!(s.info.size, body.len() as u64);
    let rcpts = &s.envelope.recipients;
    assert!(!rcpts.is_empty() && rcpts.len() <= config.max_recipients);
    if let Some(user) = &s.envelope.auth_user {
        assert!(
            config.auth.is_some() && case.real_tls,
            "login without AUTH/TLS"
        );
        assert_eq!(user, USER, "login as an unknown user");
    }
    for (i, r) in rcpts.iter().enumerate() {
        assert!(
            rcpts[..i].iter().all(|o| o.address != r.address),
            "duplicate rcpt"
        );
        // A login may relay anywhere; then the envelope must say who.
        if !case.authorized && s.envelope.auth_user.is_none() {
            assert_eq!(Recipient::new(r.address.clone()).domain(), RELAY_DOMAIN);
            assert_eq!(Mailbox::parse(&r.address).routing_form(), None);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (flags, arg) = (data[0], data[1]);
    let case = Case {
        authorized: flags & 1 != 0,
        tls_configured: flags & 2 != 0,
        real_tls: flags & 16 != 0,
        inject: flags & 64 != 0,
        shutdown_at: (flags & 8 != 0).then_some(usize::from(arg & 7)),
        cuts: &data[2..6],
        stream: &data[6..],
    };
    let setup = setup();
    let config = setup.configs[usize::from(case.tls_configured)][usize::from(flags & 32 != 0)]
        [usize::from(flags & 128 != 0)]
    .clone();
    let fail = (flags & 4 != 0).then(|| match (arg >> 4) & 3 {
        0 => SubmitError::NoQuorum("fuzz".into()),
        1 => SubmitError::Timeout,
        2 => SubmitError::ShuttingDown,
        _ => SubmitError::Internal("fuzz".into()),
    });
    let backend = Arc::new(Backend {
        accepted: Mutex::new(Vec::new()),
        calls: AtomicUsize::new(0),
        fail,
    });
    let outcome = setup
        .rt
        .block_on(drive(&case, config.clone(), backend.clone()));

    let accepted = backend.accepted.lock().unwrap().clone();
    for s in &accepted {
        check_submission(s, &case, &config);
    }
    // Nothing submitted in clear carries a login.
    let clear = if outcome.tls.is_some() {
        outcome.before_tls
    } else {
        accepted.len()
    };
    for s in &accepted[..clear] {
        assert_eq!(s.envelope.auth_user, None, "login in clear");
    }
    // `250 queued` exactly for accepted submissions, in order.
    let mut ids = replies(&outcome.plain, case.tls_configured);
    match &outcome.tls {
        None => {}
        Some(tls_out) => {
            let after: Vec<&Submission> = accepted[outcome.before_tls..].iter().collect();
            ids.extend(replies(tls_out, false));
            let sent = String::from_utf8_lossy(&outcome.tls_stream);
            for s in after {
                assert_ne!(s.envelope.reverse_path, INJECTED, "pipelined plaintext ran");
                let header = &s.body[..received_len(&s.body)];
                assert!(
                    header.windows(6).any(|w| w == b"ESMTPS"),
                    "message over TLS not marked ESMTPS"
                );
                assert!(sent.contains(&s.envelope.helo), "HELO name from before TLS");
                for r in &s.envelope.recipients {
                    assert!(sent.contains(&r.address), "recipient from before TLS");
                }
            }
        }
    }
    let want: Vec<String> = accepted.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, want, "queued replies vs accepted submissions");
});
