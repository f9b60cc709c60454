//! The relay decision for one recipient (no open relay). Pure.
//!
//! - A recipient without a domain (`<postmaster>`) is refused: a relay has
//!   no local mailboxes.
//! - From outside the authorized networks, every routing form (source
//!   route, percent hack, bang path, quoted local part, address literal,
//!   localhost) is refused, even towards a relay domain.
//! - Otherwise the recipient is accepted if its domain is a relay domain or
//!   the client is in the authorized networks; else relay is denied.

use crate::address::{Mailbox, RoutingForm};

/// What to do with one RCPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayDecision {
    /// Accept the recipient.
    Accept,
    /// `554 5.7.1 … Relay access denied`.
    Denied,
    /// `550 5.7.1`: a routing form from outside the authorized networks.
    RoutingRefused(RoutingForm),
    /// `550 5.1.1`: no domain.
    Unqualified,
}

/// Decides one recipient. `is_relay_domain` gets the normalised domain and
/// is only asked when the answer matters.
pub fn decide(
    mailbox: &Mailbox,
    client_authorized: bool,
    is_relay_domain: impl FnOnce(&str) -> bool,
) -> RelayDecision {
    if mailbox.domain.is_empty() {
        return RelayDecision::Unqualified;
    }
    if client_authorized {
        return RelayDecision::Accept;
    }
    if let Some(form) = mailbox.routing_form() {
        return RelayDecision::RoutingRefused(form);
    }
    if is_relay_domain(&mailbox.normalized_domain()) {
        RelayDecision::Accept
    } else {
        RelayDecision::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(d: &str) -> bool {
        d == "example.test"
    }

    fn outside(addr: &str) -> RelayDecision {
        decide(&Mailbox::parse(addr), false, relay)
    }

    fn inside(addr: &str) -> RelayDecision {
        decide(&Mailbox::parse(addr), true, relay)
    }

    #[test]
    fn outsiders_reach_relay_domains_only() {
        assert_eq!(outside("bob@example.test"), RelayDecision::Accept);
        assert_eq!(outside("bob@EXAMPLE.test."), RelayDecision::Accept);
        assert_eq!(outside("bob@elsewhere.test"), RelayDecision::Denied);
        assert_eq!(outside("bob@sub.example.test"), RelayDecision::Denied);
        assert_eq!(outside("postmaster"), RelayDecision::Unqualified);
    }

    #[test]
    fn outsiders_cannot_use_routing_forms_even_to_relay_domains() {
        for (addr, form) in [
            ("bob%elsewhere.test@example.test", RoutingForm::PercentHack),
            ("elsewhere.test!bob@example.test", RoutingForm::BangPath),
            ("@example.test:bob@elsewhere.test", RoutingForm::SourceRoute),
            ("@elsewhere.test:bob@example.test", RoutingForm::SourceRoute),
            (
                "\"bob@elsewhere.test\"@example.test",
                RoutingForm::QuotedLocalPart,
            ),
            ("bob@[127.0.0.1]", RoutingForm::AddressLiteral),
            ("bob@localhost", RoutingForm::Localhost),
        ] {
            assert_eq!(outside(addr), RelayDecision::RoutingRefused(form), "{addr}");
        }
    }

    #[test]
    fn authorized_clients_relay_anywhere() {
        assert_eq!(inside("bob@elsewhere.test"), RelayDecision::Accept);
        assert_eq!(inside("bob%x@example.test"), RelayDecision::Accept);
        assert_eq!(inside("bob@[192.0.2.1]"), RelayDecision::Accept);
        assert_eq!(inside("postmaster"), RelayDecision::Unqualified);
    }
}
