//! `relay_smtp::data`: the DATA terminator scanner, the dot-unstuffer, the
//! size-capped body buffer and the BDAT line checker, on arbitrary bytes cut
//! into arbitrary chunks.
//!
//! Checked against a deliberately naive reference (split the input at every
//! CRLF; the first line that is exactly `.` ends the data; every other line
//! loses one leading dot):
//! - DATA ends exactly where the reference ends it (the first `CRLF.CRLF`,
//!   or `.CRLF` as the first line) and nowhere else, whatever the chunking;
//! - the unstuffed body, the bare CR / bare LF / NUL / line-length flags and
//!   the oversize verdict equal the reference's;
//! - a body the scanner calls clean has CRLF-only line ends and no NUL;
//! - re-stuffing a clean body with `dot_stuff` and scanning it again gives
//!   the same body back (unstuff ∘ stuff = id);
//! - `LineCheck` (used for BDAT, no unstuffing) flags the same bare CR/LF,
//!   NUL and long lines as the reference on the same chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_smtp::data::{BodyBuffer, BodyFlags, DataScanner, LineCheck, dot_stuff, scan_data};

/// `[max_line, max_size (2 octets, LE), cut0..cut3, stream…]`: limits, chunk
/// lengths used cyclically (0 means one octet), then the client's bytes
/// after `354`.
struct Input<'a> {
    max_line: u8,
    max_size: u16,
    cuts: &'a [u8],
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        (data.len() >= 7).then(|| Input {
            max_line: data[0],
            max_size: u16::from_le_bytes([data[1], data[2]]),
            cuts: &data[3..7],
            stream: &data[7..],
        })
    }
}

/// What the reference says about one DATA phase.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    body: Vec<u8>,
    consumed: usize,
    line_too_long: bool,
}

/// The obviously-correct reading of RFC 5321 4.1.1.4 / 4.5.2: lines end at
/// CRLF only; `.` alone ends the data; a leading dot is removed.
fn reference(input: &[u8], max_line: usize) -> Option<Reference> {
    let mut body = Vec::new();
    let mut pos = 0;
    let mut line_too_long = false;
    while let Some(rel) = find_crlf(&input[pos..]) {
        let line = &input[pos..pos + rel];
        pos += rel + 2;
        if line == b"." {
            return Some(Reference {
                body,
                consumed: pos,
                line_too_long,
            });
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        if line.len() + 2 > max_line {
            line_too_long = true;
        }
        body.extend_from_slice(line);
        body.extend_from_slice(b"\r\n");
    }
    None
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Bare CR, bare LF and NUL as found in finished content.
fn content_flags(body: &[u8]) -> (bool, bool, bool) {
    let bare_cr = body
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && body.get(i + 1) != Some(&b'\n'));
    let bare_lf = body
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || body[i - 1] != b'\r'));
    (bare_cr, bare_lf, body.contains(&0))
}

/// Cuts `len` octets into chunk boundaries from the cyclic `cuts`.
fn chunks(len: usize, cuts: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < len {
        let step = usize::from(cuts[i % cuts.len()]).max(1);
        let end = (pos + step).min(len);
        out.push((pos, end));
        pos = end;
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max_line = usize::from(input.max_line).max(3);
    let max_size = usize::from(input.max_size);
    let stream = input.stream;

    // 1. Whole input vs the same input in chunks (as the session feeds it:
    // only the unconsumed rest is offered again).
    let whole = scan_data(stream, max_line, usize::MAX);
    let mut scanner = DataScanner::new(max_line);
    let mut sink = BodyBuffer::new(max_size);
    let mut consumed = 0;
    let mut ended = false;
    for (start, end) in chunks(stream.len(), input.cuts) {
        if ended {
            break;
        }
        let start = start.max(consumed);
        if start >= end {
            continue;
        }
        let feed = scanner.feed(&stream[start..end], &mut sink);
        assert!(feed.consumed <= end - start);
        if !feed.ended {
            assert_eq!(
                feed.consumed,
                end - start,
                "unfinished data is consumed whole"
            );
        }
        consumed = start + feed.consumed;
        ended = feed.ended;
    }
    assert_eq!(scanner.ended(), ended);
    // Once ended, the scanner takes nothing more.
    if ended {
        let again = scanner.feed(b"more\r\n.\r\n", &mut sink);
        assert_eq!((again.consumed, again.ended), (0, true));
    }

    // 2. Against the reference.
    let reference = reference(stream, max_line);
    match (&whole, &reference) {
        (None, None) => assert!(!ended),
        (Some(s), Some(r)) => {
            assert!(ended, "chunking changed whether DATA ended");
            assert_eq!(consumed, r.consumed, "chunked end differs");
            assert_eq!(s.consumed, r.consumed, "DATA ended at the wrong place");
            let head = &stream[..s.consumed];
            assert!(head == b".\r\n" || head.ends_with(b"\r\n.\r\n"));
            assert_eq!(s.body, r.body, "unstuffed body differs from the reference");
            let (bare_cr, bare_lf, nul) = content_flags(&r.body);
            let flags = s.flags;
            assert_eq!((flags.bare_cr || flags.bare_lf), (bare_cr || bare_lf));
            assert_eq!(flags.nul, nul);
            if !(bare_cr || bare_lf) {
                // Line lengths only mean something once lines are CRLF lines.
                assert_eq!(flags.line_too_long, r.line_too_long);
            }
            assert_eq!(scanner.flags(), flags, "chunked flags differ");
            // The size-capped buffer: exact verdict, never more than the limit.
            assert_eq!(sink.oversize(), r.body.len() > max_size);
            assert_eq!(sink.total(), r.body.len() as u64);
            if !sink.oversize() {
                assert_eq!(sink.as_slice(), &r.body[..]);
            } else {
                assert!(sink.as_slice().is_empty());
            }
            // 3. A clean body: CRLF only, no NUL; stuffing it and scanning
            // again gives it back.
            if !flags.bare_cr && !flags.bare_lf && !flags.nul {
                let wire = dot_stuff(&s.body);
                let back = scan_data(&wire, usize::MAX, usize::MAX).expect("stuffed body ends");
                assert_eq!(back.consumed, wire.len(), "terminator inside stuffed body");
                assert_eq!(back.body, s.body, "unstuff(stuff(body)) != body");
                assert_eq!(back.flags, BodyFlags::default());
            }
        }
        (w, r) => panic!("scanner {w:?} vs reference {r:?}"),
    }

    // 4. BDAT: the line checker on the same chunks, no unstuffing.
    let mut lines = LineCheck::new(max_line);
    for (start, end) in chunks(stream.len(), input.cuts) {
        lines.push(&stream[start..end]);
    }
    let ends_with_line_end = lines.ends_with_line_end();
    let flags = lines.finish();
    let (bare_cr, bare_lf, nul) = content_flags(stream);
    assert_eq!(flags.bare_cr, bare_cr, "BDAT bare CR");
    assert_eq!(flags.bare_lf, bare_lf, "BDAT bare LF");
    assert_eq!(flags.nul, nul, "BDAT NUL");
    assert_eq!(
        ends_with_line_end,
        stream.is_empty() || stream.ends_with(b"\r\n"),
        "BDAT line end"
    );
    if !bare_cr && !bare_lf {
        // CRLF lines (CRLF counted), then a possibly unterminated last one.
        let mut too_long = false;
        let mut rest = &stream[..];
        while let Some(i) = find_crlf(rest) {
            too_long |= i + 2 > max_line;
            rest = &rest[i + 2..];
        }
        too_long |= rest.len() > max_line;
        assert_eq!(flags.line_too_long, too_long, "BDAT line length");
    }
});
