//! The outbound DATA encoder (`relay_delivery::outbound`): a stored body of
//! arbitrary bytes → what is written after `354` (`wire_bytes`, the same
//! bytes lettre's `ClientCodec` writes for `data_payload`, as the crate's
//! own test checks against a socket).
//!
//! Properties, checked with a strict decoder written here independently
//! (split on CRLF only, the first line that is exactly `.` ends the data,
//! one leading dot is removed from every other line):
//! - the wire bytes contain no bare CR and no bare LF;
//! - they decode to exactly the normalised body (every bare CR and bare LF
//!   turned into CRLF, ending with CRLF), and the end of data is the last
//!   five octets: nothing in a body can end the data early or smuggle a
//!   second message;
//! - relay-smtp's own DATA scanner, as a receiving relay, reads the same
//!   body and flags nothing;
//! - `normalize_line_ends` is idempotent and only ever changes line ends,
//!   and `is_crlf_only` agrees with a plain definition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_delivery::outbound::{is_crlf_only, normalize_line_ends, wire_bytes};

/// Every bare CR and bare LF as CRLF; CRLF stays.
fn normalise(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match (body[i], body.get(i + 1)) {
            (b'\r', Some(b'\n')) => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            (b'\r' | b'\n', _) => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn crlf_only(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        _ => true,
    })
}

/// The strict receiver: `(body, octets up to and including the end)`.
fn strict_decode(wire: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let len = wire[pos..].windows(2).position(|w| w == b"\r\n")?;
        let line = &wire[pos..pos + len];
        pos += len + 2;
        if line == b"." {
            return Some((body, pos));
        }
        body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        body.extend_from_slice(b"\r\n");
    }
}

fuzz_target!(|body: &[u8]| {
    let normal = normalise(body);
    let got = normalize_line_ends(body);
    assert_eq!(&*got, &normal[..], "normalize_line_ends");
    assert_eq!(&*normalize_line_ends(&got), &*got, "not idempotent");
    assert_eq!(is_crlf_only(body), crlf_only(body), "is_crlf_only");
    // Only line ends change: the other octets are the same, in order.
    let others = |b: &[u8]| -> Vec<u8> {
        b.iter()
            .copied()
            .filter(|&c| c != b'\r' && c != b'\n')
            .collect()
    };
    assert_eq!(others(&got), others(body));

    let wire = wire_bytes(body);
    assert!(crlf_only(&wire), "bare CR or LF on the wire");
    let mut expected = normal;
    if !expected.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    let (decoded, end) = strict_decode(&wire).expect("wire bytes end with CRLF.CRLF");
    assert_eq!(end, wire.len(), "data ended before the last line");
    assert_eq!(decoded, expected, "strict decoder disagrees");

    // A relay-smtp receiver reads it the same way.
    let scanned = relay_smtp::data::scan_data(&wire, usize::MAX, usize::MAX)
        .expect("relay-smtp finds the end of data");
    assert_eq!(scanned.consumed, wire.len());
    assert_eq!(scanned.body, expected);
    assert!(!scanned.flags.bare_cr && !scanned.flags.bare_lf);
});
