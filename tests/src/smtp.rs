//! A small SMTP client for process tests: it writes exactly the bytes a test
//! gives it (pipelining, smuggling attempts, odd line ends) and parses the
//! replies, so tests can assert on codes and enhanced status codes.
//!
//! Every read has a deadline: a node that stops answering fails the test
//! instead of hanging it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long one reply may take (a commit through Raft included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One SMTP reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, without code and separator.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// All lines joined with newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The queue id in `250 2.0.0 Ok: queued as <ID>`.
    pub fn queued_id(&self) -> Option<String> {
        let text = self.lines.last()?;
        let (_, id) = text.split_once("queued as ")?;
        Some(id.trim().to_string())
    }
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// The connection under a client: plain TCP, or TLS after STARTTLS.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// A client connection.
pub struct SmtpClient {
    stream: BufReader<Box<dyn ClientStream>>,
    /// The server's certificate (DER), once TLS is up.
    peer_certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("tls", &self.peer_certificate.is_some())
            .finish()
    }
}

impl SmtpClient {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<(SmtpClient, SmtpReply)> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        Self::over(stream).await
    }

    /// Reads the greeting on an already connected stream (e.g. a socket
    /// bound to a chosen loopback source address).
    pub async fn over(stream: TcpStream) -> anyhow::Result<(SmtpClient, SmtpReply)> {
        let mut client = SmtpClient {
            stream: BufReader::new(Box::new(stream)),
            peer_certificate: None,
        };
        let greeting = client.read_reply().await?;
        Ok((client, greeting))
    }

    /// TLS from the first octet (port 465), accepting any certificate,
    /// then the greeting.
    pub async fn implicit_tls(stream: TcpStream) -> anyhow::Result<(SmtpClient, SmtpReply)> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(any_certificate_client()));
        let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
        let tls = tokio::time::timeout(REPLY_TIMEOUT, connector.connect(name, stream))
            .await
            .context("TLS handshake timed out")?
            .context("TLS handshake")?;
        let peer_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let mut client = SmtpClient {
            stream: BufReader::new(Box::new(tls)),
            peer_certificate,
        };
        let greeting = client.read_reply().await?;
        Ok((client, greeting))
    }

    /// `STARTTLS`, then a TLS handshake that accepts any certificate (the
    /// tests check which one was presented). Fails if the server sent
    /// anything after its `220` (that would be injected plaintext).
    pub async fn starttls(&mut self) -> anyhow::Result<()> {
        self.starttls_pipelining(b"").await
    }

    /// [`starttls`](Self::starttls), with `extra` written in the same
    /// packet right after `STARTTLS` (the CVE-2011-0411 injection).
    pub async fn starttls_pipelining(&mut self, extra: &[u8]) -> anyhow::Result<()> {
        self.send_raw(&[&b"STARTTLS\r\n"[..], extra].concat())
            .await?;
        let reply = self.read_reply().await?;
        if reply.code != 220 {
            bail!("STARTTLS refused: {reply}");
        }
        if !self.stream.buffer().is_empty() {
            bail!("the server sent bytes after 220 to STARTTLS");
        }
        let placeholder: Box<dyn ClientStream> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.stream, BufReader::new(placeholder)).into_inner();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(any_certificate_client()));
        let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
        let tls = tokio::time::timeout(REPLY_TIMEOUT, connector.connect(name, plain))
            .await
            .context("TLS handshake timed out")?
            .context("TLS handshake")?;
        self.peer_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        self.stream = BufReader::new(Box::new(tls));
        Ok(())
    }

    /// The certificate the server presented in the TLS handshake.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_certificate.as_deref()
    }

    /// Has the server closed the connection (EOF within the deadline)?
    pub async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Connects, checks the greeting and says EHLO.
    pub async fn connect_ehlo(addr: SocketAddr) -> anyhow::Result<SmtpClient> {
        let (mut client, greeting) = Self::connect(addr).await?;
        if greeting.code != 220 {
            bail!("greeting from {addr}: {greeting}");
        }
        let ehlo = client.command("EHLO client.test").await?;
        if ehlo.code != 250 {
            bail!("EHLO at {addr}: {ehlo}");
        }
        Ok(client)
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> anyhow::Result<SmtpReply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_line(&mut line))
                .await
                .context("no reply within the deadline")??;
            if n == 0 {
                bail!("connection closed before a reply (got {lines:?})");
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 3 {
                bail!("malformed reply line {line:?}");
            }
            let code: u16 = line[..3]
                .parse()
                .with_context(|| format!("malformed reply line {line:?}"))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(SmtpReply { code, lines });
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn command(&mut self, line: &str) -> anyhow::Result<SmtpReply> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// `DATA`, then the message dot-stuffed and terminated; returns the reply
    /// to `DATA` if it is not 354, else the reply to the final dot.
    pub async fn data(&mut self, message: &[u8]) -> anyhow::Result<SmtpReply> {
        let go = self.command("DATA").await?;
        if go.code != 354 {
            return Ok(go);
        }
        self.send_raw(&dot_stuff(message)).await?;
        self.send_raw(b".\r\n").await?;
        self.read_reply().await
    }
}

/// A rustls client that accepts any server certificate: the tests talk to
/// nodes with self-signed certificates and compare the certificate itself.
fn any_certificate_client() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Dot-stuffs `message` (a leading `.` on a line is doubled) and makes sure
/// it ends with CRLF, ready to be followed by `.\r\n`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One whole transaction in a fresh session: EHLO, MAIL, RCPT each, DATA.
/// Returns the first reply that is not positive, or the final reply.
pub async fn send_mail(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> anyhow::Result<SmtpReply> {
    let mut client = SmtpClient::connect_ehlo(addr).await?;
    let reply = transaction(&mut client, from, to, message).await?;
    let _ = client.command("QUIT").await;
    Ok(reply)
}

/// One transaction on an open session (see [`send_mail`]).
pub async fn transaction(
    client: &mut SmtpClient,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> anyhow::Result<SmtpReply> {
    let mail = client.command(&format!("MAIL FROM:<{from}>")).await?;
    if mail.code != 250 {
        return Ok(mail);
    }
    for rcpt in to {
        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).await?;
        if reply.code != 250 {
            let _ = client.command("RSET").await;
            return Ok(reply);
        }
    }
    client.data(message).await
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn dot_stuffing_doubles_leading_dots_only() {
        assert_eq!(dot_stuff(b".a\r\nb.c\r\n..\r\n"), b"..a\r\nb.c\r\n...\r\n");
        assert_eq!(dot_stuff(b"x"), b"x\r\n");
    }
}
