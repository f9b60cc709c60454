//! Every reply the server sends, in one place, and the one mapping from
//! [`SubmitError`] to an SMTP reply.
//!
//! Enhanced status codes (RFC 3463) are on every reply except the `220`
//! greeting, the `354` go-ahead and the EHLO capability list, which
//! RFC 2034 leaves without them.

use std::borrow::Cow;
use std::fmt;

use relay_types::MessageId;

use crate::SubmitError;

/// One SMTP reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code (`2.0.0`), if the reply carries one.
    pub status: Option<&'static str>,
    /// One entry per line (at least one).
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    fn bare(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status: None,
            lines: vec![text.into()],
        }
    }

    /// Serialises the reply with CRLF line ends.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(sep as u8);
            if let Some(status) = self.status {
                out.extend_from_slice(status.as_bytes());
                out.push(b' ');
            }
            // Reply text never carries CR or LF (it may quote client input).
            out.extend(
                line.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    /// 4xx or 5xx.
    pub fn is_negative(&self) -> bool {
        self.code >= 400
    }

    /// 5xx: counts towards `max_errors`.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// 421: the session closes after sending it.
    pub fn closes_session(&self) -> bool {
        self.code == 421
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

/// The one place [`SubmitError`] becomes an SMTP reply.
pub fn submit_error_reply(err: &SubmitError, hostname: &str) -> Reply {
    match err {
        SubmitError::NoQuorum(_) => Reply::new(
            451,
            "4.3.0",
            "Error: queue unavailable (no quorum), try again later",
        ),
        SubmitError::Timeout => Reply::new(
            451,
            "4.3.0",
            "Error: queue commit timed out, try again later",
        ),
        SubmitError::Internal(_) => {
            Reply::new(451, "4.3.0", "Error: internal error, try again later")
        }
        SubmitError::ShuttingDown => shutting_down(hostname),
    }
}

// ---- connection ----------------------------------------------------------

/// `220` greeting.
pub fn greeting(hostname: &str) -> Reply {
    Reply::bare(220, format!("{hostname} ESMTP quorum-relay"))
}

/// `421 4.7.0`: the global connection cap is reached.
pub fn too_many_connections(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Error: too many connections, try again later"),
    )
}

/// `421 4.7.0`: the per-IP connection cap is reached.
pub fn too_many_connections_from_ip(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Error: too many connections from your address, try again later"),
    )
}

/// `421 4.7.0`: the session caused `max_errors` errors.
pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Error: too many errors, closing connection"),
    )
}

/// `421 4.4.2`: a command or data timeout.
pub fn timeout(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.4.2",
        format!("{hostname} Error: timeout exceeded, closing connection"),
    )
}

/// `421 4.7.0`: a PROXY protocol problem (a header from an address that
/// may not send one, or none or a broken one from a load balancer that
/// must). Temporary, like Haraka's answer: a configuration mistake must
/// not bounce mail.
pub fn proxy_refused(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Error: PROXY protocol refused for this connection"),
    )
}

/// `530 5.7.0`: on a submission listener, AUTH or MAIL before STARTTLS
/// (Postfix `smtpd_tls_security_level = encrypt`).
pub fn starttls_first() -> Reply {
    Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
}

/// `530 5.7.0`: on a submission listener, MAIL before AUTH (RFC 4954 6).
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}

/// `550 5.1.1`: a relay domain's recipient list does not hold the address
/// (Postfix `relay_recipient_maps`).
pub fn unknown_recipient(address: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("<{address}>: Recipient address rejected: User unknown in relay recipient table"),
    )
}

/// `550 5.1.1`: the relay domain's target refused the recipient when
/// asked (Postfix `reject_unverified_recipient`).
pub fn undeliverable_recipient(address: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("<{address}>: Recipient address rejected: undeliverable address"),
    )
}

/// `450 4.1.1`: the recipient could not be verified now.
pub fn recipient_unverified(address: &str) -> Reply {
    Reply::new(
        450,
        "4.1.1",
        format!("<{address}>: Recipient address rejected: unverified address, try again later"),
    )
}

/// `421 4.3.2`: this node takes no mail now (drained for maintenance, or a
/// recovery replica); another node of the tier does.
pub fn not_accepting(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.3.2",
        format!("{hostname} Service not available on this node, try another server"),
    )
}

/// `452 4.3.1`: this node's queue file system has too little free space
/// for another message (Postfix's `queue_minfree` check). Temporary: the
/// client retries, here once space is freed or at another node.
pub fn insufficient_storage() -> Reply {
    Reply::new(452, "4.3.1", "Error: insufficient system storage")
}

/// `421 4.3.2`: the node is shutting down.
pub fn shutting_down(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.3.2",
        format!("{hostname} Service shutting down, closing connection"),
    )
}

/// `221 2.0.0` to QUIT.
pub fn bye() -> Reply {
    Reply::new(221, "2.0.0", "Bye")
}

// ---- greeting and simple commands ---------------------------------------

/// What EHLO advertises beyond the always-on extensions.
#[derive(Clone, Copy, Debug)]
pub struct EhloOffer {
    /// The SIZE limit.
    pub size: u64,
    /// Offer STARTTLS (TLS configured and not active yet).
    pub starttls: bool,
    /// Offer `AUTH PLAIN LOGIN` (credentials configured and TLS active:
    /// never in clear).
    pub auth: bool,
}

/// The multi-line `250` to EHLO.
pub fn ehlo(hostname: &str, offer: EhloOffer) -> Reply {
    let mut lines: Vec<Cow<'static, str>> = vec![
        Cow::Owned(hostname.to_string()),
        "PIPELINING".into(),
        Cow::Owned(format!("SIZE {}", offer.size)),
        "8BITMIME".into(),
        "SMTPUTF8".into(),
        "ENHANCEDSTATUSCODES".into(),
        "DSN".into(),
        "CHUNKING".into(),
    ];
    if offer.starttls {
        lines.push("STARTTLS".into());
    }
    if offer.auth {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    Reply {
        code: 250,
        status: None,
        lines,
    }
}

/// `250` to HELO.
pub fn helo(hostname: &str) -> Reply {
    Reply::new(250, "2.0.0", hostname.to_string())
}

/// `250 2.0.0 Ok` (NOOP, RSET).
pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}

/// `252` to VRFY: we never disclose mailboxes.
pub fn vrfy() -> Reply {
    Reply::new(
        252,
        "2.0.0",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

/// `214` to HELP.
pub fn help() -> Reply {
    Reply::new(
        214,
        "2.0.0",
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH",
    )
}

/// `502 5.5.1`: a command we do not implement (EXPN, ETRN, ATRN, BURL, LHLO).
pub fn not_implemented(command: &str) -> Reply {
    Reply::new(
        502,
        "5.5.1",
        format!("Error: command {command} not implemented"),
    )
}

/// `503 5.5.1`: AUTH is not offered (no credentials configured).
pub fn auth_not_enabled() -> Reply {
    Reply::new(503, "5.5.1", "Error: authentication not enabled")
}

// ---- AUTH (RFC 4954) ---------------------------------------------------------

/// `538 5.7.11`: AUTH before STARTTLS; passwords never travel in clear.
pub fn auth_needs_tls() -> Reply {
    Reply::new(
        538,
        "5.7.11",
        "Error: encryption required for requested authentication mechanism",
    )
}

/// `504 5.5.4`: a mechanism other than PLAIN and LOGIN.
pub fn auth_mechanism_unsupported() -> Reply {
    Reply::new(504, "5.5.4", "Error: unsupported authentication mechanism")
}

/// `503 5.5.1`: AUTH twice, or inside a mail transaction.
pub fn auth_bad_sequence(what: &'static str) -> Reply {
    Reply::new(503, "5.5.1", format!("Error: {what}"))
}

/// `334` challenge (base64 text, possibly empty).
pub fn auth_challenge(base64: &'static str) -> Reply {
    Reply::bare(334, base64)
}

/// `501 5.0.0`: the client answered a challenge with `*`.
pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.0.0", "Authentication aborted")
}

/// `501 5.5.2`: a SASL response that is not base64 or not well formed.
pub fn auth_malformed() -> Reply {
    Reply::new(501, "5.5.2", "Error: cannot decode authentication response")
}

/// `235 2.7.0`: logged in.
pub fn auth_succeeded() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful")
}

/// `535 5.7.8`: wrong user name or password (never says which).
pub fn auth_failed() -> Reply {
    Reply::new(535, "5.7.8", "Error: authentication failed")
}

/// `421 4.7.0`: too many failed logins from this address; closes.
pub fn auth_too_many_failures(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Error: too many failed authentication attempts, try again later"),
    )
}

// ---- syntax and sequence -------------------------------------------------

/// `500 5.5.2`: unknown command.
pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2", "Error: command not recognized")
}

/// `500 5.5.2`: a command line longer than 512 octets.
pub fn command_line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Error: command line too long")
}

/// `500 5.5.2`: a command line with a bare CR/LF or NUL in it.
pub fn bad_command_line() -> Reply {
    Reply::new(
        500,
        "5.5.2",
        "Error: command line must end with CRLF and contain no bare CR, LF or NUL",
    )
}

/// `501 5.5.4`: wrong arguments; `usage` names the right form.
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
}

/// `501 5.5.4`: a parameter with a bad value.
pub fn invalid_parameter(param: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Error: invalid {param} parameter"))
}

/// `555 5.5.4`: a MAIL/RCPT parameter we did not advertise.
pub fn unsupported_parameter(param: &str) -> Reply {
    Reply::new(
        555,
        "5.5.4",
        format!("Error: unsupported parameter {param}"),
    )
}

/// `503 5.5.1`: bad sequence of commands.
pub fn bad_sequence(what: &'static str) -> Reply {
    Reply::new(503, "5.5.1", format!("Error: {what}"))
}

// ---- MAIL / RCPT ----------------------------------------------------------

/// `250 2.1.0` to MAIL.
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Ok")
}

/// `250 2.1.5` to RCPT.
pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Ok")
}

/// `501 5.1.7`: unparseable reverse path.
pub fn bad_sender_syntax() -> Reply {
    Reply::new(501, "5.1.7", "Error: bad sender address syntax")
}

/// `501 5.1.3`: unparseable forward path.
pub fn bad_recipient_syntax() -> Reply {
    Reply::new(501, "5.1.3", "Error: bad recipient address syntax")
}

/// `553 5.6.7`: a non-ASCII address without `SMTPUTF8` on MAIL.
pub fn needs_smtputf8() -> Reply {
    Reply::new(
        553,
        "5.6.7",
        "Error: non-ASCII address requires the SMTPUTF8 parameter",
    )
}

/// `552 5.3.4`: the declared or actual size exceeds the limit.
pub fn message_too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Error: message size exceeds fixed maximum message size",
    )
}

/// `452 4.5.3`: one recipient more than `max_recipients`.
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "Error: too many recipients")
}

/// `554 5.7.1`: not a relay domain and not an authorized client.
pub fn relay_denied(address: &str) -> Reply {
    Reply::new(554, "5.7.1", format!("<{address}>: Relay access denied"))
}

/// `550 5.7.1`: an address routing form refused from outside.
pub fn routing_refused(address: &str, why: &str) -> Reply {
    Reply::new(
        550,
        "5.7.1",
        format!("<{address}>: Relay access denied ({why} not accepted)"),
    )
}

/// `550 5.1.1`: an unqualified recipient (`<postmaster>`); a relay has no
/// local mailboxes.
pub fn unqualified_recipient(address: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("<{address}>: unqualified recipient, this relay has no local mailboxes"),
    )
}

// ---- DATA / BDAT ----------------------------------------------------------

/// `354` go-ahead for DATA.
pub fn start_data() -> Reply {
    Reply::bare(354, "End data with <CR><LF>.<CR><LF>")
}

/// `250 2.0.0` for a non-last BDAT chunk.
pub fn chunk_received(octets: u64) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok: {octets} octets received"))
}

/// `250 2.0.0 Ok: queued as <ID>` — only after the commit.
pub fn queued(id: MessageId) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
}

/// `550 5.6.11`: bare CR or bare LF in the message (smuggling defence).
pub fn bare_cr_or_lf() -> Reply {
    Reply::new(550, "5.6.11", "bare CR or LF in message")
}

/// `550 5.6.0`: a NUL octet in the message (not allowed in 7bit or
/// 8BITMIME; some servers drop NULs, which could turn data into a
/// terminator downstream).
pub fn nul_in_message() -> Reply {
    Reply::new(550, "5.6.0", "NUL octet in message")
}

/// `500 5.5.2`: a text line longer than 1000 octets.
pub fn text_line_too_long() -> Reply {
    Reply::new(
        500,
        "5.5.2",
        "Error: line too long (limit is 1000 octets including CRLF)",
    )
}

/// `550 5.6.0`: no header section (see the crate docs).
pub fn no_header_section() -> Reply {
    Reply::new(550, "5.6.0", "message has no header section")
}

/// `552 5.3.4`: the header section exceeds `max_header_size`.
pub fn header_section_too_big() -> Reply {
    Reply::new(552, "5.3.4", "Error: message header section too large")
}

// ---- STARTTLS --------------------------------------------------------------

/// `220 2.0.0` before the TLS handshake.
pub fn tls_ready() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}

/// `502 5.5.1`: STARTTLS without TLS configured.
pub fn tls_not_available() -> Reply {
    not_implemented("STARTTLS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn submit_errors_map_to_temporary_replies() {
        let cases = [
            (SubmitError::NoQuorum("leader unknown".into()), 451, "4.3.0"),
            (SubmitError::Timeout, 451, "4.3.0"),
            (SubmitError::Internal("disk".into()), 451, "4.3.0"),
            (SubmitError::ShuttingDown, 421, "4.3.2"),
        ];
        for (err, code, status) in cases {
            let r = submit_error_reply(&err, "mx.test");
            assert_eq!((r.code, r.status), (code, Some(status)), "{err}");
        }
        // Internal details never reach the client.
        let r = submit_error_reply(&SubmitError::Internal("secret path".into()), "mx.test");
        assert!(!text(&r).contains("secret"));
    }

    #[test]
    fn multi_line_and_enhanced_codes_are_formatted() {
        let r = ehlo(
            "mx.test",
            EhloOffer {
                size: 100,
                starttls: true,
                auth: false,
            },
        );
        let t = text(&r);
        assert!(t.starts_with("250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n"));
        assert!(t.ends_with("250 STARTTLS\r\n"));
        assert_eq!(
            text(&queued(MessageId([0xAB; 16]))),
            format!("250 2.0.0 Ok: queued as {}\r\n", "AB".repeat(16))
        );
        assert_eq!(
            text(&relay_denied("a\r\nb@x")),
            "554 5.7.1 <a  b@x>: Relay access denied\r\n"
        );
    }
}
