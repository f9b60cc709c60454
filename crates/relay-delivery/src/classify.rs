//! SMTP replies and transport failures → what they mean for a recipient.
//!
//! The one place that decides: 2xx (and 3xx intermediate) → delivered,
//! 5xx → permanent failure, 4xx and every local or network failure
//! (connect, TLS, timeout, lost connection, unparsable reply) → temporary.

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::response::Response;
use relay_types::AttemptOutcome;

/// How one reply counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyClass {
    /// 2xx: accepted.
    Success,
    /// 4xx or no usable reply: try again later.
    Temporary,
    /// 5xx: will never work; bounce.
    Permanent,
}

impl ReplyClass {
    /// The class of a three-digit reply code.
    pub fn of_code(code: u16) -> ReplyClass {
        match code / 100 {
            2 | 3 => ReplyClass::Success,
            5 => ReplyClass::Permanent,
            _ => ReplyClass::Temporary,
        }
    }

    /// The recipient outcome this class records.
    pub fn outcome(self) -> AttemptOutcome {
        match self {
            ReplyClass::Success => AttemptOutcome::Delivered,
            ReplyClass::Temporary => AttemptOutcome::Deferred,
            ReplyClass::Permanent => AttemptOutcome::Failed,
        }
    }
}

/// A classified reply with the text kept in traces and DSNs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    /// What it means.
    pub class: ReplyClass,
    /// `550 5.1.1 user unknown`, or a local description such as
    /// `connection refused`.
    pub reply: String,
}

impl Classified {
    /// A temporary failure described locally.
    pub fn temporary(reply: impl Into<String>) -> Self {
        Classified {
            class: ReplyClass::Temporary,
            reply: reply.into(),
        }
    }

    /// A permanent failure described locally.
    pub fn permanent(reply: impl Into<String>) -> Self {
        Classified {
            class: ReplyClass::Permanent,
            reply: reply.into(),
        }
    }
}

/// `250 2.0.0 Ok: queued as X` from a positive response.
pub fn response_text(response: &Response) -> String {
    let code = u16::from(response.code());
    let lines: Vec<&str> = response.message().collect();
    join_reply(code, &lines.join(" "))
}

/// Classifies a failed command. Negative replies keep their code and text;
/// everything else (I/O, TLS, parse errors) is temporary.
pub fn classify_error(error: &SmtpError) -> Classified {
    if let Some(code) = error.status() {
        let code = u16::from(code);
        let text = std::error::Error::source(error)
            .map(|s| s.to_string())
            .unwrap_or_default();
        return Classified {
            class: ReplyClass::of_code(code),
            reply: join_reply(code, &text),
        };
    }
    if error.is_timeout() {
        return Classified::temporary("timed out");
    }
    Classified::temporary(one_line(&error.to_string()))
}

/// True when the error carries no reply code: the connection is no longer
/// usable (I/O error, TLS failure, garbage from the server).
pub fn connection_lost(error: &SmtpError) -> bool {
    error.status().is_none()
}

/// The enhanced status code (`5.1.1`) a reply text carries after its
/// three-digit code, if any.
pub fn enhanced_status(reply: &str) -> Option<&str> {
    let mut words = reply.split_whitespace();
    let first = words.next()?;
    let word = if first.len() == 3 && first.bytes().all(|b| b.is_ascii_digit()) {
        words.next()?
    } else {
        first
    };
    let mut parts = word.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    (parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && digits(subject, 3)
        && digits(detail, 3))
    .then_some(word)
}

fn join_reply(code: u16, text: &str) -> String {
    let text = one_line(text);
    if text.is_empty() {
        code.to_string()
    } else {
        format!("{code} {text}")
    }
}

/// Collapses line breaks so a reply is one trace line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_map_to_classes() {
        assert_eq!(ReplyClass::of_code(250), ReplyClass::Success);
        assert_eq!(ReplyClass::of_code(251), ReplyClass::Success);
        assert_eq!(ReplyClass::of_code(354), ReplyClass::Success);
        assert_eq!(ReplyClass::of_code(421), ReplyClass::Temporary);
        assert_eq!(ReplyClass::of_code(451), ReplyClass::Temporary);
        assert_eq!(ReplyClass::of_code(452), ReplyClass::Temporary);
        assert_eq!(ReplyClass::of_code(550), ReplyClass::Permanent);
        assert_eq!(ReplyClass::of_code(554), ReplyClass::Permanent);
        // Nonsense codes are never a reason to bounce.
        assert_eq!(ReplyClass::of_code(199), ReplyClass::Temporary);
        assert_eq!(ReplyClass::of_code(999), ReplyClass::Temporary);
    }

    #[test]
    fn classes_map_to_recipient_outcomes() {
        assert_eq!(ReplyClass::Success.outcome(), AttemptOutcome::Delivered);
        assert_eq!(ReplyClass::Temporary.outcome(), AttemptOutcome::Deferred);
        assert_eq!(ReplyClass::Permanent.outcome(), AttemptOutcome::Failed);
    }

    #[test]
    fn positive_response_text_keeps_code_and_joins_lines() {
        let r: Response = "250-2.0.0 Ok\r\n250 queued as 7\r\n"
            .parse()
            .expect("parse");
        assert_eq!(response_text(&r), "250 2.0.0 Ok queued as 7");
        let bare: Response = "250 \r\n".parse().expect("parse");
        assert_eq!(response_text(&bare), "250");
    }

    #[test]
    fn enhanced_status_is_found_only_when_well_formed() {
        assert_eq!(enhanced_status("550 5.1.1 user unknown"), Some("5.1.1"));
        assert_eq!(enhanced_status("451 4.3.0 try later"), Some("4.3.0"));
        assert_eq!(enhanced_status("4.4.7 expired"), Some("4.4.7"));
        assert_eq!(enhanced_status("550 user unknown"), None);
        assert_eq!(enhanced_status("550 5.1 short"), None);
        assert_eq!(enhanced_status("550 3.1.1 bad class"), None);
        assert_eq!(enhanced_status("550 5.1.1.1 long"), None);
        assert_eq!(enhanced_status(""), None);
    }

    #[test]
    fn local_descriptions_are_one_line() {
        assert_eq!(one_line("a\r\n  b\tc "), "a b c");
        assert_eq!(join_reply(421, " closing\r\n"), "421 closing");
    }
}
