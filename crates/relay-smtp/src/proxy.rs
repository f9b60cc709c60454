//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1
//! and 2), parsed by hand: pure, bounded, separately tested and fuzzed.
//!
//! A TCP load balancer in front of the tier sends this header first on each
//! connection it opens to a node, naming the client it accepted the
//! connection from. [`serve`](crate::serve) reads it only from the
//! addresses in [`SmtpConfig::proxy_protocol_from`](crate::SmtpConfig) and
//! then runs the session as if the client had connected directly: relay
//! control, per-IP limits, AUTH failure counts, the `Received:` header and
//! the logs all see the real address.
//!
//! What is accepted:
//! - v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` (addresses of the named
//!   family, decimal ports without leading zeros), or `PROXY UNKNOWN…\r\n`;
//!   at most 107 octets, as the specification bounds it.
//! - v2: the 12-octet signature, version 2, command `LOCAL` or `PROXY`,
//!   family `UNSPEC`, `INET` or `INET6` over `STREAM` (`UNIX` is taken as
//!   `UNSPEC`), any TLVs after the addresses (skipped unread); the address
//!   block at most [`MAX_V2_PAYLOAD`] octets.
//!
//! `UNKNOWN`, `LOCAL` and `UNSPEC` carry no client: the connection's own
//! address is used (the balancer's health checks send them). Everything
//! else is [`ProxyError`]: the caller closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (specification section 2.1).
pub const MAX_V1_LINE: usize = 107;
/// The longest v2 address block (addresses and TLVs) accepted. Balancers
/// send a few dozen octets; the protocol allows 65535, but nothing here
/// reads TLVs, so a larger block is refused rather than buffered.
pub const MAX_V2_PAYLOAD: usize = 4096;

/// What a complete header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Version 1 or 2.
    pub version: u8,
    /// The client the balancer accepted (source), and the address it was
    /// accepted on (destination); `None` for `UNKNOWN`/`LOCAL`/`UNSPEC`.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

impl ProxyHeader {
    /// The client address: the header's source, or `connection` when the
    /// header names none.
    pub fn client(&self, connection: SocketAddr) -> SocketAddr {
        self.addresses.map_or(connection, |(source, _)| source)
    }
}

/// The result of looking at the first octets of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough octets yet to decide; read more.
    Incomplete,
    /// A whole header, `len` octets long (what follows is SMTP).
    Complete {
        /// The header.
        header: ProxyHeader,
        /// Its length in octets.
        len: usize,
    },
}

/// Why the first octets are not an acceptable PROXY header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Neither the v1 `PROXY ` prefix nor the v2 signature.
    #[error("no PROXY header")]
    Missing,
    /// A v1 line that is too long, not CRLF-terminated, or malformed.
    #[error("malformed PROXY v1 header: {0}")]
    BadV1(&'static str),
    /// A v2 header with a wrong version, command, family or length.
    #[error("malformed PROXY v2 header: {0}")]
    BadV2(&'static str),
}

impl ProxyError {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::Missing => "missing",
            ProxyError::BadV1(_) | ProxyError::BadV2(_) => "malformed",
        }
    }
}

/// Parses the start of `buf` as a PROXY header. Never reads past the
/// header: `len` is exact, so what follows can be handed to the session.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    const V1_PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if n < V2_SIGNATURE.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        if n < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v1(buf);
    }
    Err(ProxyError::Missing)
}

/// Does `buf` start like a PROXY header (either version)? For telling an
/// untrusted client that sends one apart from any other client.
pub fn looks_like_proxy(buf: &[u8]) -> bool {
    buf.starts_with(b"PROXY ") || buf.starts_with(&V2_SIGNATURE)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(MAX_V1_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= MAX_V1_LINE {
            return Err(ProxyError::BadV1("longer than 107 octets"));
        }
        return Ok(Parsed::Incomplete);
    };
    let line = &window[..lf];
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(ProxyError::BadV1("not terminated by CRLF"));
    };
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::BadV1("not ASCII"))?;
    if !line.is_ascii() || line.bytes().any(|b| b.is_ascii_control()) {
        return Err(ProxyError::BadV1("not printable ASCII"));
    }
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked by the caller
    let header = match fields.next() {
        // The rest of an UNKNOWN line is ignored (specification 2.1).
        Some("UNKNOWN") => ProxyHeader {
            version: 1,
            addresses: None,
        },
        Some(proto @ ("TCP4" | "TCP6")) => {
            let v4 = proto == "TCP4";
            let fields: Vec<&str> = fields.collect();
            let [src, dst, sport, dport] = fields.as_slice() else {
                return Err(ProxyError::BadV1("expected 4 fields after the protocol"));
            };
            let src = v1_addr(src, v4)?;
            let dst = v1_addr(dst, v4)?;
            let sport = v1_port(sport)?;
            let dport = v1_port(dport)?;
            ProxyHeader {
                version: 1,
                addresses: Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport))),
            }
        }
        _ => return Err(ProxyError::BadV1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Complete {
        header,
        len: lf + 1,
    })
}

fn v1_addr(text: &str, v4: bool) -> Result<IpAddr, ProxyError> {
    if v4 {
        text.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError::BadV1("not an IPv4 address"))
    } else {
        text.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError::BadV1("not an IPv6 address"))
    }
}

fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let bad = ProxyError::BadV1("not a port (0-65535, no leading zeros)");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(bad);
    }
    text.parse::<u16>().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    const FIXED: usize = 16;
    if buf.len() < FIXED {
        return Ok(Parsed::Incomplete);
    }
    let ver_cmd = buf[12];
    let fam = buf[13];
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadV2("version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::BadV2("command is neither LOCAL nor PROXY")),
    };
    if payload > MAX_V2_PAYLOAD {
        return Err(ProxyError::BadV2("address block larger than 4096 octets"));
    }
    let family = fam >> 4;
    let transport = fam & 0x0f;
    if family > 3 || transport > 2 {
        return Err(ProxyError::BadV2("unknown address family or transport"));
    }
    let needed = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if payload < needed {
        return Err(ProxyError::BadV2("address block shorter than its family"));
    }
    if buf.len() < FIXED + payload {
        return Ok(Parsed::Incomplete);
    }
    let len = FIXED + payload;
    let block = &buf[FIXED..len];
    // LOCAL: the balancer's own connection (health check); addresses, if
    // any, are ignored. UNSPEC and UNIX name no IP client.
    if local || family == 0 || family == 3 {
        return Ok(Parsed::Complete {
            header: ProxyHeader {
                version: 2,
                addresses: None,
            },
            len,
        });
    }
    if transport != 1 {
        return Err(ProxyError::BadV2("transport is not STREAM"));
    }
    let addresses = if family == 1 {
        let ip = |at: usize| {
            IpAddr::V4(Ipv4Addr::new(
                block[at],
                block[at + 1],
                block[at + 2],
                block[at + 3],
            ))
        };
        let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
        (
            SocketAddr::new(ip(0), port(8)),
            SocketAddr::new(ip(4), port(10)),
        )
    } else {
        let ip = |at: usize| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
        (
            SocketAddr::new(ip(0), port(32)),
            SocketAddr::new(ip(16), port(34)),
        )
    };
    Ok(Parsed::Complete {
        header: ProxyHeader {
            version: 2,
            addresses: Some(addresses),
        },
        len,
    })
}

/// Encodes a v1 header (for clients: tests, tools).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// Encodes a v2 `PROXY` header over `STREAM` with no TLVs (for clients:
/// tests, tools). Both addresses must be of the same family.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { header, len }) => (header, len),
            other => panic!("expected a complete header for {buf:?}, got {other:?}"),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_name_the_client() {
        let (h, len) = complete(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\nEHLO x\r\n");
        assert_eq!(len, 45);
        assert_eq!(h.version, 1);
        assert_eq!(h.client(sa("127.0.0.1:1")), sa("192.0.2.10:40000"));
        assert_eq!(h.addresses.unwrap().1, sa("198.51.100.1:25"));
        let (h, _) = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n");
        assert_eq!(h.client(sa("127.0.0.1:1")), sa("[2001:db8::1]:65535"));
    }

    #[test]
    fn v1_unknown_uses_the_connection_address() {
        let conn = sa("127.0.0.1:5");
        let (h, len) = complete(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.client(conn), len), (conn, 15));
        let (h, _) = complete(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n");
        assert_eq!(h.client(conn), conn);
    }

    #[test]
    fn v1_partial_input_asks_for_more() {
        let full = b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn v1_malformed_headers_are_refused() {
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        for bad in [
            &b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\n"[..],
            b"PROXY TCP4 192.0.2.10 198.51.100.1 40000\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25 9\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 40000 25\r\n",
            b"PROXY TCP6 192.0.2.10 2001:db8::1 40000 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 040000 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 25\r\n",
            b"PROXY TCP4  192.0.2.10 198.51.100.1 40000 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25 \r\n",
            b"PROXY UDP4 192.0.2.10 198.51.100.1 40000 25\r\n",
            b"PROXY tcp4 192.0.2.10 198.51.100.1 40000 25\r\n",
            b"PROXY TCP4 192.0.2.10\t198.51.100.1 40000 25\r\n",
            b"PROXY TCP4 192.0.2.\xff 198.51.100.1 40000 25\r\n",
            long.as_bytes(),
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::BadV1(_))),
                "{:?} must be refused, got {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        // 107 octets without a line end can never become a header.
        let unterminated = format!("PROXY UNKNOWN {}", "x".repeat(100));
        assert!(matches!(
            parse(unterminated.as_bytes()),
            Err(ProxyError::BadV1(_))
        ));
    }

    #[test]
    fn anything_else_is_missing() {
        for other in [
            &b"EHLO client.test\r\n"[..],
            b"proxy TCP4",
            b"\r\n\r\n\x01",
            b"PROXX",
        ] {
            assert_eq!(parse(other), Err(ProxyError::Missing), "{other:?}");
        }
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
    }

    #[test]
    fn v2_round_trips_both_families() {
        for (s, d) in [
            (sa("192.0.2.10:40000"), sa("198.51.100.1:25")),
            (sa("[2001:db8::1]:1"), sa("[2001:db8::2]:587")),
        ] {
            let mut wire = encode_v2(s, d);
            let header_len = wire.len();
            wire.extend_from_slice(b"EHLO x\r\n");
            let (h, len) = complete(&wire);
            assert_eq!(len, header_len);
            assert_eq!(h.version, 2);
            assert_eq!(h.addresses, Some((s, d)));
            for cut in 0..header_len {
                assert_eq!(parse(&wire[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
            }
        }
        let (h, _) = complete(&encode_v1(sa("192.0.2.10:1"), sa("192.0.2.11:2")));
        assert_eq!(h.client(sa("127.0.0.1:9")), sa("192.0.2.10:1"));
    }

    #[test]
    fn v2_tlvs_are_skipped_and_local_uses_the_connection() {
        let mut wire = encode_v2(sa("192.0.2.10:40000"), sa("198.51.100.1:25"));
        wire[15] = 12 + 7;
        wire.extend_from_slice(&[0x04, 0x00, 0x04, 1, 2, 3, 4]); // PP2_TYPE_NOOP
        let (h, len) = complete(&wire);
        assert_eq!(len, wire.len());
        assert_eq!(h.client(sa("127.0.0.1:1")), sa("192.0.2.10:40000"));

        let conn = sa("127.0.0.1:1");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            complete(&local),
            (
                ProxyHeader {
                    version: 2,
                    addresses: None
                },
                16
            )
        );
        assert_eq!(complete(&local).0.client(conn), conn);
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 3, 9, 9, 9]);
        assert_eq!(complete(&unspec).0.client(conn), conn);
    }

    #[test]
    fn v2_malformed_headers_are_refused() {
        let good = encode_v2(sa("192.0.2.10:40000"), sa("198.51.100.1:25"));
        let with = |at: usize, value: u8| {
            let mut w = good.clone();
            w[at] = value;
            w
        };
        for (bad, why) in [
            (with(12, 0x11), "version 1"),
            (with(12, 0x31), "version 3"),
            (with(12, 0x22), "command 2"),
            (with(13, 0x41), "family 4"),
            (with(13, 0x13), "transport 3"),
            (with(13, 0x12), "DGRAM"),
            (with(15, 11), "too short for INET"),
            (with(13, 0x21), "INET6 with 12 octets"),
            (
                {
                    let mut w = good.clone();
                    w[14] = 0x10;
                    w[15] = 0x01;
                    w
                },
                "4097 octets",
            ),
        ] {
            assert!(
                matches!(parse(&bad), Err(ProxyError::BadV2(_))),
                "{why}: got {:?}",
                parse(&bad)
            );
        }
    }

    proptest::proptest! {
        /// What fuzz/proxy_header checks, on random inputs in every test
        /// run: a complete header lies within its bound and parses the same
        /// from its own octets, every proper prefix is incomplete.
        #[test]
        fn any_bytes_parse_within_bounds(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(Parsed::Complete { header, len }) = parse(&data) {
                proptest::prop_assert!(len <= data.len());
                proptest::prop_assert!(len <= MAX_V1_LINE.max(16 + MAX_V2_PAYLOAD));
                proptest::prop_assert_eq!(parse(&data[..len]), Ok(Parsed::Complete { header, len }));
                for cut in 0..len {
                    proptest::prop_assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete));
                }
            }
        }

        #[test]
        fn encoded_headers_round_trip(
            v6 in proptest::prelude::any::<bool>(),
            a in proptest::prelude::any::<u128>(),
            b in proptest::prelude::any::<u128>(),
            sp in proptest::prelude::any::<u16>(),
            dp in proptest::prelude::any::<u16>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let ip = |x: u128| if v6 {
                IpAddr::V6(Ipv6Addr::from(x))
            } else {
                IpAddr::V4(Ipv4Addr::from(x as u32))
            };
            let (s, d) = (SocketAddr::new(ip(a), sp), SocketAddr::new(ip(b), dp));
            for mut wire in [encode_v1(s, d), encode_v2(s, d)] {
                let header_len = wire.len();
                wire.extend_from_slice(&tail);
                match parse(&wire) {
                    Ok(Parsed::Complete { header, len }) => {
                        proptest::prop_assert_eq!(len, header_len);
                        proptest::prop_assert_eq!(header.addresses, Some((s, d)));
                    }
                    other => proptest::prop_assert!(false, "{:?}", other),
                }
            }
        }
    }

    #[test]
    fn looks_like_proxy_spots_both_versions() {
        assert!(looks_like_proxy(b"PROXY TCP4 1.2.3.4"));
        assert!(looks_like_proxy(&V2_SIGNATURE));
        assert!(!looks_like_proxy(b"EHLO x\r\n"));
    }
}
