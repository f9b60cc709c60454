//! Session limits, timeouts, trusted networks and TLS material.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::SmtpAuth;
use crate::tls::ServerTls;

/// Everything an SMTP session needs to know besides the backend.
///
/// The node builds it from its TOML file; [`Default`] gives the values below.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// Our name in the greeting, EHLO reply and `Received:` header.
    /// Default: the machine's host name, or `localhost`.
    pub hostname: String,
    /// Largest message accepted, in octets of client data (dot-unstuffed,
    /// without our `Received:` header); advertised as `SIZE`. Default
    /// 10 MiB (Postfix `message_size_limit`).
    pub max_message_size: u64,
    /// Recipients per transaction; the next RCPT gets `452 4.5.3`.
    /// Default 1000.
    pub max_recipients: usize,
    /// Longest command line including CRLF (RFC 5321 4.5.3.1.4: 512).
    pub max_command_line: usize,
    /// Longest text line in a message including CRLF, not counting a
    /// stuffing dot (RFC 5321 4.5.3.1.6: 1000).
    pub max_text_line: usize,
    /// Largest header section (up to the first empty line) in octets;
    /// larger messages get `552 5.3.4`. Default 102400 (Postfix
    /// `header_size_limit`).
    pub max_header_size: usize,
    /// How long the server waits for one complete command line (and for a
    /// client to take a reply). Default 300 s; then `421 4.4.2` and close.
    pub command_timeout: Duration,
    /// Longest silence while message data (DATA or a BDAT chunk) is
    /// arriving. Default 300 s; then `421 4.4.2` and close.
    pub data_timeout: Duration,
    /// Longest TLS handshake after `220 2.0.0 Ready to start TLS`.
    /// Default 60 s.
    pub tls_handshake_timeout: Duration,
    /// 5xx replies a session may cause before it gets `421 4.7.0` and is
    /// closed. Default 20.
    pub max_errors: u32,
    /// Concurrent sessions on this listener; past it new connections get
    /// `421 4.7.0` at greeting. Default 20000 (10,000 idle sessions must fit,
    /// with room for more).
    pub max_connections: usize,
    /// Concurrent sessions per client IP; past it `421 4.7.0` at greeting.
    /// Clients in [`authorized_networks`](Self::authorized_networks) are
    /// exempt, like Postfix's `smtpd_client_event_limit_exceptions`.
    /// Default 50 (Postfix `smtpd_client_connection_count_limit`).
    pub max_connections_per_ip: usize,
    /// Clients allowed to relay to any domain (Postfix `mynetworks`).
    /// Default `127.0.0.0/8` and `::1/128`.
    pub authorized_networks: Vec<Cidr>,
    /// Server TLS configuration; `None` means STARTTLS is not offered.
    /// Replaceable while running (SIGHUP reload): each STARTTLS takes the
    /// current certificate.
    pub tls: Option<Arc<ServerTls>>,
    /// SMTP AUTH; `None` means AUTH is not offered. Offered only after
    /// STARTTLS; an authenticated client may relay like an authorized
    /// network.
    pub auth: Option<Arc<SmtpAuth>>,
    /// What this listener is for: relay (port 25), submission (587:
    /// STARTTLS, then AUTH, before MAIL) or implicit TLS submission (465).
    pub role: ListenerRole,
    /// Load balancers whose connections start with a PROXY protocol
    /// header (v1 or v2); the session then sees the client it names.
    /// A connection from these addresses without a valid header, and a
    /// PROXY header from any other address, is answered `421 4.7.0` and
    /// closed. Default: none (PROXY protocol off).
    pub proxy_protocol_from: Vec<Cidr>,
    /// How long a load balancer has to send its PROXY header. Default 5 s
    /// (Postfix `smtpd_upstream_proxy_timeout`).
    pub proxy_protocol_timeout: Duration,
    /// Recipient lists of relay domains: a recipient of a listed domain
    /// that is not on its list gets `550 5.1.1` at RCPT. `None`: every
    /// local part is accepted.
    pub recipients: Option<Arc<crate::recipients::RecipientLists>>,
    /// After shutdown is requested, how long [`serve`](crate::serve) waits
    /// for sessions (which answer `421 4.3.2` at their next command) before
    /// aborting them. Default 30 s.
    pub shutdown_grace: Duration,
    /// Sessions open now, counted by [`serve`](crate::serve) (the node
    /// reads it to say when a drained node is safe to stop).
    pub open_sessions: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: default_hostname(),
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 1000,
            max_command_line: 512,
            max_text_line: 1000,
            max_header_size: 102_400,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            tls_handshake_timeout: Duration::from_secs(60),
            max_errors: 20,
            max_connections: 20_000,
            max_connections_per_ip: 50,
            authorized_networks: vec![
                Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("valid prefix"),
                Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).expect("valid prefix"),
            ],
            tls: None,
            auth: None,
            role: ListenerRole::Relay,
            proxy_protocol_from: Vec::new(),
            proxy_protocol_timeout: Duration::from_secs(5),
            recipients: None,
            shutdown_grace: Duration::from_secs(30),
            open_sessions: Arc::default(),
        }
    }
}

/// What a listener is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerRole {
    /// Port 25: mail for the relay domains from anyone, any mail from the
    /// authorized networks or after AUTH.
    Relay,
    /// Port 587 (RFC 6409): STARTTLS before AUTH, AUTH before MAIL.
    Submission,
    /// Port 465 (RFC 8314): TLS from the first octet, AUTH before MAIL.
    Smtps,
}

impl ListenerRole {
    /// A short name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ListenerRole::Relay => "smtp",
            ListenerRole::Submission => "submission",
            ListenerRole::Smtps => "smtps",
        }
    }

    /// Must a client log in before MAIL?
    pub fn requires_auth(self) -> bool {
        self != ListenerRole::Relay
    }
}

impl SmtpConfig {
    /// Is this connection from a load balancer that sends a PROXY header?
    pub fn is_proxy(&self, ip: IpAddr) -> bool {
        self.proxy_protocol_from.iter().any(|n| n.contains(ip))
    }

    /// Is this client in one of the authorized networks?
    pub fn is_authorized(&self, ip: IpAddr) -> bool {
        self.authorized_networks.iter().any(|n| n.contains(ip))
    }

    /// The message size limit as `usize` (saturating on 32-bit targets).
    pub(crate) fn max_message_usize(&self) -> usize {
        usize::try_from(self.max_message_size).unwrap_or(usize::MAX)
    }
}

fn default_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// An IP network such as `127.0.0.0/8` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A network that is not `ADDRESS/PREFIX` with a prefix in range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a network (expected ADDRESS or ADDRESS/PREFIX, e.g. 127.0.0.0/8): {0:?}")]
pub struct ParseCidrError(pub String);

impl Cidr {
    /// A network; `None` if the prefix is longer than the address.
    /// Host bits are masked off (`127.0.0.1/8` is `127.0.0.0/8`).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = canonical(addr);
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Some(Cidr { addr, prefix })
    }

    /// Does the network contain `ip`? IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses become IPv4, so one rule covers both forms.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCidrError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| err())?,
            None => match canonical(addr) {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            },
        };
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parses_masks_and_matches() {
        let n: Cidr = "127.0.0.1/8".parse().unwrap();
        assert_eq!(n.to_string(), "127.0.0.0/8");
        assert!(n.contains(ip("127.255.0.3")));
        assert!(n.contains(ip("::ffff:127.0.0.1")), "v4-mapped v6 matches");
        assert!(!n.contains(ip("128.0.0.1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn defaults_trust_loopback_only() {
        let c = SmtpConfig::default();
        assert!(c.is_authorized(ip("127.0.0.1")));
        assert!(c.is_authorized(ip("::1")));
        assert!(!c.is_authorized(ip("192.0.2.1")));
        assert_eq!(c.max_message_size, 10 * 1024 * 1024);
        assert_eq!(c.max_recipients, 1000);
        assert_eq!(c.max_command_line, 512);
        assert_eq!(c.max_text_line, 1000);
        assert!(!c.hostname.is_empty());
    }
}
