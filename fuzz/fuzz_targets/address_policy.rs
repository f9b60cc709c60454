//! The relay decision (crates/relay-smtp/src/address.rs + policy.rs) on
//! arbitrary recipient paths, read the way RCPT reads them (`split_path` on
//! the raw `RCPT TO:<…>` line, then `Mailbox::parse`).
//!
//! Properties (no open relay):
//! - a client outside the authorized networks is `Accept`ed only for a relay
//!   domain: the policy asked `is_relay_domain` about exactly the mailbox's
//!   normalised domain and got `true`, and the mailbox uses no routing form;
//! - the domain delivery later routes on (`Recipient::domain`, i.e. after the
//!   last `@` of the stored address) is that same relay domain, so what the
//!   policy judged is what gets delivered;
//! - an authorised client is accepted exactly when the path has a domain;
//! - the decision is deterministic.
//!
//! (`normalize_domain` is not idempotent when whitespace precedes trailing
//! dots, `"a.test ."` → `"a.test "` → `"a.test"`; harmless here because the
//! policy and delivery apply it the same way once, so it is not asserted.)
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use relay_smtp::address::{Mailbox, split_path};
use relay_smtp::policy::{RelayDecision, decide};
use relay_types::Recipient;

/// The relay domains of this run (what `routes` would hold).
const RELAY_DOMAINS: &[&str] = &["example.test", "relay.example", "xn--bcher-kva.example"];

fn is_relay(domain: &str) -> bool {
    RELAY_DOMAINS.contains(&domain)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // Either the bare path text or a whole RCPT line, as the session sees it.
    let line = if flags & 2 == 0 {
        format!("RCPT TO:<{text}>\r\n")
    } else {
        format!("{text}\r\n")
    };
    let Some(path) = split_path(&line) else {
        return;
    };
    let mailbox = Mailbox::parse(path.text);
    let authorized = flags & 1 == 1;

    let asked = RefCell::new(None::<String>);
    let decision = decide(&mailbox, authorized, |d| {
        *asked.borrow_mut() = Some(d.to_string());
        is_relay(d)
    });
    assert_eq!(
        decision,
        decide(&mailbox, authorized, is_relay),
        "deterministic"
    );

    let domain = mailbox.normalized_domain();

    if mailbox.domain.is_empty() {
        assert_eq!(decision, RelayDecision::Unqualified);
        return;
    }
    if authorized {
        assert_eq!(decision, RelayDecision::Accept);
        return;
    }
    match decision {
        RelayDecision::Accept => {
            assert_eq!(mailbox.routing_form(), None);
            assert_eq!(asked.borrow().as_deref(), Some(domain.as_str()));
            assert!(is_relay(&domain), "outsider accepted for {domain:?}");
            // What the queue and delivery will route on.
            let routed = Recipient::new(mailbox.address.clone()).domain();
            assert_eq!(
                routed, domain,
                "policy judged {domain:?} but delivery routes {:?} to {routed:?}",
                mailbox.address
            );
            assert!(is_relay(&routed));
        }
        RelayDecision::Denied => {
            assert_eq!(mailbox.routing_form(), None);
            assert!(!is_relay(&domain));
        }
        RelayDecision::RoutingRefused(form) => {
            assert_eq!(mailbox.routing_form(), Some(form));
            assert!(asked.borrow().is_none(), "no lookup for a refused form");
        }
        RelayDecision::Unqualified => panic!("unqualified with a domain"),
    }
});
