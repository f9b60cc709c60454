//! The SMTP envelope, with every parameter RFC 5321, 6152, 6531 and 3461 carry.

use serde::{Deserialize, Serialize};

/// `BODY=` from MAIL FROM (RFC 6152 / RFC 3030).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BodyType {
    /// No BODY parameter, or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME` (only with BDAT).
    BinaryMime,
}

/// `RET=` from MAIL FROM (RFC 3461): how much of the message a DSN returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DsnRet {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Headers,
}

/// `NOTIFY=` on RCPT TO (RFC 3461). All false means the parameter was absent
/// (the default: notify on failure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DsnNotify {
    /// `NOTIFY=NEVER`.
    pub never: bool,
    /// `SUCCESS` listed.
    pub success: bool,
    /// `FAILURE` listed.
    pub failure: bool,
    /// `DELAY` listed.
    pub delay: bool,
}

impl DsnNotify {
    /// Whether a failure DSN should be sent for this recipient.
    pub fn wants_failure(&self) -> bool {
        if self.never {
            return false;
        }
        let explicit = self.success || self.failure || self.delay;
        !explicit || self.failure
    }
}

/// One `RCPT TO`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward path, without angle brackets (`user@example.test`).
    pub address: String,
    /// `ORCPT=` as given (`rfc822;user@example.test`), if any.
    pub orcpt: Option<String>,
    /// `NOTIFY=`.
    pub notify: DsnNotify,
}

impl Recipient {
    /// A recipient with no DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Recipient {
            address: address.into(),
            orcpt: None,
            notify: DsnNotify::default(),
        }
    }

    /// The domain part, lower-cased (empty if there is no `@`).
    pub fn domain(&self) -> String {
        crate::route::normalize_domain(
            self.address
                .rsplit_once('@')
                .map(|(_, d)| d)
                .unwrap_or_default(),
        )
    }
}

/// Everything the envelope said, kept so delivery and DSNs can honour it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    /// The reverse path without angle brackets; empty for the null sender `<>`.
    pub reverse_path: String,
    /// Recipients in RCPT order.
    pub recipients: Vec<Recipient>,
    /// `SIZE=` as declared, if any.
    pub declared_size: Option<u64>,
    /// `BODY=`.
    pub body_type: BodyType,
    /// `SMTPUTF8` given on MAIL FROM.
    pub smtputf8: bool,
    /// `ENVID=`.
    pub envid: Option<String>,
    /// `RET=`.
    pub ret: Option<DsnRet>,
    /// The client's EHLO/HELO name.
    pub helo: String,
    /// The client's IP address and port, as text.
    pub client_addr: String,
    /// The authenticated user, if the client used AUTH.
    pub auth_user: Option<String>,
}

impl Envelope {
    /// True for the null reverse path `<>` (bounces): never send a DSN to it.
    pub fn is_null_sender(&self) -> bool {
        self.reverse_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_defaults_to_failure_and_never_wins() {
        assert!(DsnNotify::default().wants_failure());
        let only_success = DsnNotify {
            success: true,
            ..Default::default()
        };
        assert!(!only_success.wants_failure());
        let never = DsnNotify {
            never: true,
            ..Default::default()
        };
        assert!(!never.wants_failure());
    }

    #[test]
    fn recipient_domain_is_lower_case() {
        assert_eq!(Recipient::new("Bob@Example.TEST").domain(), "example.test");
        assert_eq!(Recipient::new("postmaster").domain(), "");
    }
}
