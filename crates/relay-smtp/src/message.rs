//! What the session checks and learns from a message's header section.
//!
//! # The header-section rule
//! A message is accepted when its first line is a header field
//! (`name:` with a name of printable ASCII other than `:`, RFC 5322 2.2;
//! obsolete whitespace before the colon is tolerated) or is the empty line
//! that ends an empty header section. Anything else — an empty message, a
//! first line such as `Hello` or an mbox `From ` line — is refused with
//! `550 5.6.0 message has no header section`: our `Received:` header goes in
//! front, and would otherwise turn that first line into a malformed header
//! field that each downstream parser reads its own way.
//!
//! The header section (up to and including the CRLF before the first empty
//! line, or the whole message if there is no empty line) is bounded by
//! `max_header_size`, and only that section is handed to mail-parser.

use mail_parser::MessageParser;
use relay_types::MessageInfo;

/// Subjects are cut to this many characters in [`MessageInfo`].
pub const MAX_SUBJECT_CHARS: usize = 200;

/// Why a header section is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// No header section (see the module docs). `550 5.6.0`.
    Missing,
    /// Longer than `max_header_size`. `552 5.3.4`.
    TooLarge,
}

/// Checks the header section and returns its length in octets.
pub fn check_header_section(body: &[u8], max_header_size: usize) -> Result<usize, HeaderProblem> {
    if body.starts_with(b"\r\n") {
        return Ok(0);
    }
    if !first_line_is_field(body) {
        return Err(HeaderProblem::Missing);
    }
    let len = memchr::memmem::find(body, b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(body.len());
    if len > max_header_size {
        return Err(HeaderProblem::TooLarge);
    }
    Ok(len)
}

fn first_line_is_field(body: &[u8]) -> bool {
    let name_len = body
        .iter()
        .position(|&b| !(33..=126).contains(&b) || b == b':')
        .unwrap_or(body.len());
    if name_len == 0 {
        return false;
    }
    let rest = &body[name_len..];
    let ws = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(rest.len());
    rest.get(ws) == Some(&b':')
}

/// Message-ID and Subject from the header section; `size` is the stored
/// body length.
pub fn message_info(header_section: &[u8], size: u64) -> MessageInfo {
    let parsed = MessageParser::new().parse_headers(header_section);
    let message_id_header = parsed
        .as_ref()
        .and_then(|m| m.message_id())
        .map(str::to_string);
    let subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .map(|s| s.chars().take(MAX_SUBJECT_CHARS).collect());
    MessageInfo {
        message_id_header,
        subject,
        size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_rule() {
        assert_eq!(
            check_header_section(b"Subject: x\r\n\r\nbody\r\n", 100),
            Ok(12)
        );
        assert_eq!(check_header_section(b"Subject: x\r\n", 100), Ok(12));
        assert_eq!(check_header_section(b"X-Obs : y\r\n\r\n", 100), Ok(11));
        assert_eq!(check_header_section(b"\r\nbody only\r\n", 100), Ok(0));
        for bad in [
            &b""[..],
            b"Hello world\r\n",
            b"From bob@x Mon\r\n",
            b": x\r\n",
            b" a: b\r\n",
        ] {
            assert_eq!(
                check_header_section(bad, 100),
                Err(HeaderProblem::Missing),
                "{bad:?}"
            );
        }
        let big = format!("X: {}\r\n\r\n", "a".repeat(200));
        assert_eq!(
            check_header_section(big.as_bytes(), 100),
            Err(HeaderProblem::TooLarge)
        );
    }

    #[test]
    fn info_has_message_id_and_cut_subject() {
        let subject = "é".repeat(300);
        let h = format!("Message-ID: <abc@example.test>\r\nSubject: {subject}\r\n");
        let info = message_info(h.as_bytes(), 42);
        assert_eq!(info.message_id_header.as_deref(), Some("abc@example.test"));
        assert_eq!(
            info.subject.as_ref().unwrap().chars().count(),
            MAX_SUBJECT_CHARS
        );
        assert_eq!(info.size, 42);
        let none = message_info(b"X-Other: 1\r\n", 1);
        assert_eq!((none.message_id_header, none.subject), (None, None));
    }
}
