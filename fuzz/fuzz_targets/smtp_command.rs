//! The SMTP command-line path of relay-smtp on arbitrary bytes: the same
//! steps `Session::command` (crates/relay-smtp/src/session/mod.rs) runs on
//! one line: CRLF-only check, address-literal masking, smtp-proto's
//! `Request::parse`, then the raw path re-read (`split_path`,
//! `Mailbox::parse`, `raw_param`) that MAIL and RCPT act on.
//!
//! Properties beyond "no panic, no hang":
//! - `split_path` returns a slice of the line that sits right after a `<`,
//!   and its parameters are the line's text after the closing `>`;
//! - `mask_address_literal` only ever replaces the domain of a valid address
//!   literal: the masked line has the same local part and parameters, and
//!   the placeholder domain;
//! - when smtp-proto accepts RCPT TO / MAIL FROM and the raw path is a plain
//!   mailbox (no routing form, which the policy would refuse from outside
//!   anyway), smtp-proto's address and the raw mailbox name the same domain:
//!   the syntax check and the relay policy read the same recipient;
//! - `BDAT n` never yields a chunk size that the session could not count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_smtp::address::{Mailbox, mask_address_literal, raw_param, split_path};
use relay_types::normalize_domain;
use smtp_proto::Request;

const PLACEHOLDER: &str = "address-literal.invalid";

fuzz_target!(|data: &[u8]| {
    // The session hands `command` one line up to and including LF; make
    // every input such a line, and also try it as sent (no LF) below.
    let mut line = data.to_vec();
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    // Incomplete input must not panic either (smtp-proto NeedsMoreData).
    let _ = Request::parse(&mut data.iter());

    let body = &line[..line.len() - 1];
    let Some(body) = body.strip_suffix(b"\r") else {
        return; // 500 5.5.2 in the session.
    };
    if body.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return;
    }
    let utf8 = std::str::from_utf8(&line).is_ok();
    let raw = String::from_utf8_lossy(&line);

    check_split_path(&raw);
    let masked = mask_address_literal(&raw);
    if let Some(m) = &masked {
        check_masked(&raw, m);
    }
    let bytes = masked.as_ref().map_or(&line[..], |m| m.as_bytes());
    let Ok(request) = Request::parse(&mut bytes.iter()) else {
        return;
    };
    match request {
        Request::Mail { from } if utf8 => {
            same_domain(&from.address, &raw);
            if raw_param(split_path(&raw).map_or("", |p| p.params), "SIZE").is_some() {
                let _ = from.size as u64;
            }
        }
        Request::Rcpt { to } if utf8 => same_domain(&to.address, &raw),
        Request::Bdat { chunk_size, .. } => {
            assert!(u64::try_from(chunk_size).is_ok());
        }
        _ => {}
    }
});

fn check_split_path(raw: &str) {
    let Some(p) = split_path(raw) else { return };
    assert!(p.start >= 1 && raw.as_bytes()[p.start - 1] == b'<');
    assert_eq!(&raw[p.start..p.start + p.text.len()], p.text);
    let after = p.start + p.text.len();
    assert_eq!(raw.as_bytes()[after], b'>');
    assert_eq!(raw[after + 1..].trim_end_matches(['\r', '\n']), p.params);
    let m = Mailbox::parse(p.text);
    // The parts are taken from the text, never invented.
    assert!(p.text.ends_with(&m.address));
    assert!(m.address.starts_with(&m.local));
    assert!(m.address.ends_with(&m.domain));
    if !m.domain.is_empty() {
        assert_eq!(m.address.len(), m.local.len() + 1 + m.domain.len());
    }
}

fn check_masked(raw: &str, masked: &str) {
    let before = split_path(raw).expect("masking needs a path");
    let after = split_path(masked).expect("masked line keeps its path");
    let (b, a) = (Mailbox::parse(before.text), Mailbox::parse(after.text));
    assert!(relay_smtp::address::is_address_literal(&b.domain));
    assert_eq!(a.domain, PLACEHOLDER);
    assert_eq!(a.local, b.local);
    assert_eq!(a.source_route, b.source_route);
    assert_eq!(after.params, before.params);
    assert_eq!(&masked[..after.start], &raw[..before.start]);
}

/// smtp-proto's address vs the raw mailbox the policy judges. (A masked
/// address literal is a routing form, so it never gets this far.)
fn same_domain(parsed: &str, raw: &str) {
    let Some(path) = split_path(raw) else { return };
    let mailbox = Mailbox::parse(path.text);
    if parsed.is_empty() || mailbox.domain.is_empty() || mailbox.routing_form().is_some() {
        return;
    }
    let Some((_, parsed_domain)) = parsed.rsplit_once('@') else {
        panic!(
            "smtp-proto gave {parsed:?} without a domain for raw path {:?}",
            path.text
        );
    };
    assert_eq!(
        normalize_domain(parsed_domain),
        mailbox.normalized_domain(),
        "smtp-proto read {parsed:?}, the policy reads {:?}",
        path.text
    );
}
