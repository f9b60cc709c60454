//! Raw path analysis for MAIL FROM / RCPT TO.
//!
//! smtp-proto validates the command syntax and decodes parameters, but it
//! strips source routes and quotes from the address it returns. The relay
//! policy must see exactly what the client wrote, so this module re-reads
//! the path between `<` and `>` from the raw command line (which smtp-proto
//! has already accepted) and reports every routing form in it.

use std::net::IpAddr;

/// The `<…>` part of a MAIL/RCPT command line and what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPath<'a> {
    /// Between the angle brackets, exactly as sent.
    pub text: &'a str,
    /// Byte offset of `text` in the line.
    pub start: usize,
    /// Everything after the closing `>` (the ESMTP parameters).
    pub params: &'a str,
}

/// Finds the path in a command line: from the first `<` to the first `>`
/// outside a quoted string. `None` if there is none, or if the path's
/// domain holds a `"` (then the path is malformed; see below).
pub fn split_path(line: &str) -> Option<RawPath<'_>> {
    let start = line.find('<')? + 1;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in line[start..].char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => {
                let end = start + i;
                let text = &line[start..end];
                // A domain is never quoted (RFC 5321 4.1.2), but smtp-proto
                // drops quote characters anywhere in an address, so it
                // validates `bob@"x y".test` as `bob@x y.test` while the
                // relay policy and the envelope use the raw text: two
                // readings of one recipient (found by fuzz/smtp_command).
                // Refuse such a path so MAIL/RCPT answer 501.
                if Mailbox::parse(text).domain.contains('"') {
                    return None;
                }
                return Some(RawPath {
                    text,
                    start,
                    params: line[end + 1..].trim_end_matches(['\r', '\n']),
                });
            }
            _ => {}
        }
    }
    None
}

/// smtp-proto refuses address literals (`bob@[192.0.2.1]`) as bad syntax.
/// When the path's domain is a valid IPv4 or IPv6 address literal, this
/// returns the line with that literal replaced by a placeholder domain, so
/// smtp-proto can still check the rest of the command; the policy then
/// judges the literal from the raw line.
pub fn mask_address_literal(line: &str) -> Option<String> {
    let path = split_path(line)?;
    let mailbox = Mailbox::parse(path.text);
    if !is_address_literal(&mailbox.domain) {
        return None;
    }
    let end = path.start + path.text.len();
    let domain_start = end - mailbox.domain.len();
    Some(format!(
        "{}address-literal.invalid{}",
        &line[..domain_start],
        &line[end..]
    ))
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3; general address
/// literals are not supported).
pub fn is_address_literal(domain: &str) -> bool {
    let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    inner
        .get(..5)
        .filter(|tag| tag.eq_ignore_ascii_case("IPv6:"))
        .and_then(|_| inner[5..].parse::<std::net::Ipv6Addr>().ok())
        .is_some()
}

/// The raw value of an ESMTP parameter (`KEY=value`), as sent (still
/// xtext-encoded where the parameter uses xtext). Keys match
/// case-insensitively.
pub fn raw_param<'a>(params: &'a str, key: &str) -> Option<&'a str> {
    params.split_ascii_whitespace().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case(key).then_some(v)
    })
}

/// A mailbox as the client wrote it, with its routing features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// The address without a source route (`user@domain`, quotes kept).
    pub address: String,
    /// The local part, quotes kept.
    pub local: String,
    /// The domain as written (empty if there is no `@`).
    pub domain: String,
    /// A source route (`@a,@b:`) preceded the mailbox.
    pub source_route: bool,
}

impl Mailbox {
    /// Reads a path's text (between `<` and `>`). The empty path (`<>`)
    /// gives an empty mailbox.
    pub fn parse(text: &str) -> Mailbox {
        let (source_route, address) = match text.strip_prefix('@') {
            Some(_) => match text.find(':') {
                Some(colon) => (true, &text[colon + 1..]),
                None => (true, text),
            },
            None => (false, text),
        };
        // The domain starts after the last `@` outside quotes.
        let mut in_quote = false;
        let mut escaped = false;
        let mut at = None;
        for (i, c) in address.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' if in_quote => escaped = true,
                '"' => in_quote = !in_quote,
                '@' if !in_quote => at = Some(i),
                _ => {}
            }
        }
        let (local, domain) = match at {
            Some(i) => (&address[..i], &address[i + 1..]),
            None => (address, ""),
        };
        Mailbox {
            address: address.to_string(),
            local: local.to_string(),
            domain: domain.to_string(),
            source_route,
        }
    }

    /// The domain, normalised for the relay-domain lookup.
    pub fn normalized_domain(&self) -> String {
        relay_types::normalize_domain(&self.domain)
    }

    /// The first routing form this mailbox uses, if any.
    pub fn routing_form(&self) -> Option<RoutingForm> {
        let domain = self.normalized_domain();
        if self.source_route {
            Some(RoutingForm::SourceRoute)
        } else if self.local.contains('"') {
            Some(RoutingForm::QuotedLocalPart)
        } else if self.local.contains('%') {
            Some(RoutingForm::PercentHack)
        } else if self.local.contains('!') {
            Some(RoutingForm::BangPath)
        } else if domain.starts_with('[') || domain.parse::<IpAddr>().is_ok() {
            Some(RoutingForm::AddressLiteral)
        } else if is_localhost(&domain) {
            Some(RoutingForm::Localhost)
        } else {
            None
        }
    }
}

/// Address forms that route mail somewhere other than the domain says.
/// Refused from clients outside the authorized networks (no open relay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingForm {
    /// `<@hop1,@hop2:user@domain>` (RFC 821 source route).
    SourceRoute,
    /// `user%other@domain` (percent hack).
    PercentHack,
    /// `host!user@domain` (UUCP bang path).
    BangPath,
    /// `"any thing"@domain`.
    QuotedLocalPart,
    /// `user@[192.0.2.1]`, `user@[IPv6:…]` or a bare IP as the domain.
    AddressLiteral,
    /// `user@localhost`, `user@x.localhost`, `user@localhost.localdomain`.
    Localhost,
}

impl RoutingForm {
    /// A short description for the reply text.
    pub fn describe(&self) -> &'static str {
        match self {
            RoutingForm::SourceRoute => "source route",
            RoutingForm::PercentHack => "percent hack",
            RoutingForm::BangPath => "bang path",
            RoutingForm::QuotedLocalPart => "quoted local part",
            RoutingForm::AddressLiteral => "address literal",
            RoutingForm::Localhost => "localhost domain",
        }
    }
}

fn is_localhost(domain: &str) -> bool {
    domain == "localhost"
        || domain.ends_with(".localhost")
        || domain == "localdomain"
        || domain == "localhost.localdomain"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths_with_quotes_and_params() {
        let p = split_path("RCPT TO:<\"a>b\"@x.test> NOTIFY=NEVER ORCPT=rfc822;a+40x\r\n").unwrap();
        assert_eq!(p.text, "\"a>b\"@x.test");
        assert_eq!(raw_param(p.params, "orcpt"), Some("rfc822;a+40x"));
        assert_eq!(raw_param(p.params, "NOTIFY"), Some("NEVER"));
        assert_eq!(raw_param(p.params, "SIZE"), None);
        assert_eq!(split_path("MAIL FROM:<>\r\n").unwrap().text, "");
        assert!(split_path("MAIL FROM:a@b\r\n").is_none());
    }

    #[test]
    fn refuses_quotes_in_the_domain() {
        // fuzz/artifacts/smtp_command/quoted-domain-min: smtp-proto reads
        // `5@`, the policy would have read the domain `""`.
        assert_eq!(split_path("RCPT TO:<5@\"\">\r\n"), None);
        assert_eq!(split_path("RCPT TO:<bob@\"exa mple\".test>\r\n"), None);
        assert_eq!(
            split_path("MAIL FROM:<a@b.test\"@example.test\">\r\n"),
            None
        );
        // Quotes belong in the local part only.
        let p = split_path("RCPT TO:<\"b@b\"@example.test>\r\n").unwrap();
        assert_eq!(Mailbox::parse(p.text).domain, "example.test");
    }

    #[test]
    fn masks_valid_address_literals_only() {
        assert_eq!(
            mask_address_literal("RCPT TO:<bob@[192.0.2.1]> NOTIFY=NEVER\r\n").as_deref(),
            Some("RCPT TO:<bob@address-literal.invalid> NOTIFY=NEVER\r\n")
        );
        assert!(mask_address_literal("RCPT TO:<bob@[IPv6:2001:db8::1]>\r\n").is_some());
        assert_eq!(mask_address_literal("RCPT TO:<bob@[300.1.1.1]>\r\n"), None);
        assert_eq!(mask_address_literal("RCPT TO:<bob@[x:y]>\r\n"), None);
        assert_eq!(mask_address_literal("RCPT TO:<bob@example.test>\r\n"), None);
    }

    #[test]
    fn finds_every_routing_form() {
        let form = |t: &str| Mailbox::parse(t).routing_form();
        assert_eq!(form("bob@example.test"), None);
        assert_eq!(form("Bob.Smith+tag@Example.TEST"), None);
        assert_eq!(
            form("@a.test,@b.test:bob@c.test"),
            Some(RoutingForm::SourceRoute)
        );
        assert_eq!(
            form("bob%evil.test@example.test"),
            Some(RoutingForm::PercentHack)
        );
        assert_eq!(
            form("evil.test!bob@example.test"),
            Some(RoutingForm::BangPath)
        );
        assert_eq!(
            form("\"bob@evil\"@example.test"),
            Some(RoutingForm::QuotedLocalPart)
        );
        assert_eq!(form("bob@[192.0.2.1]"), Some(RoutingForm::AddressLiteral));
        assert_eq!(
            form("bob@[IPv6:2001:db8::1]"),
            Some(RoutingForm::AddressLiteral)
        );
        assert_eq!(form("bob@192.0.2.1"), Some(RoutingForm::AddressLiteral));
        assert_eq!(form("bob@LOCALHOST"), Some(RoutingForm::Localhost));
        assert_eq!(form("bob@localhost."), Some(RoutingForm::Localhost));
        assert_eq!(form("bob@x.localhost"), Some(RoutingForm::Localhost));
        assert_eq!(
            form("bob@localhost.localdomain"),
            Some(RoutingForm::Localhost)
        );
        let m = Mailbox::parse("@a,@b:bob@c.test");
        assert_eq!(
            (m.address.as_str(), m.domain.as_str()),
            ("bob@c.test", "c.test")
        );
        let q = Mailbox::parse("\"x@y\"@z.test");
        assert_eq!((q.local.as_str(), q.domain.as_str()), ("\"x@y\"", "z.test"));
    }
}
