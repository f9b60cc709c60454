//! The message body reader: DATA terminator scanner, dot-unstuffer, line
//! checker and the size-capped body buffer. Pure (no I/O), streaming, and
//! chunking-invariant: feeding input in any split gives the same result.
//!
//! # The rules
//! - A line ends only at CRLF. A bare LF or a bare CR is an ordinary octet
//!   for framing purposes, so `\n.\n`, `\r.\n`, `\n.\r\n`, `\r\n.\n`,
//!   `\r.\r\n` and every other mix never end DATA.
//! - DATA ends only at a line that is exactly `.` followed by CRLF, i.e. the
//!   octets `CRLF . CRLF` (or `. CRLF` as the very first line).
//! - A line starting with `.` loses that first dot (RFC 5321 4.5.2), nothing
//!   else is changed.
//! - Bare CR, bare LF and NUL are recorded in [`BodyFlags`]; the session
//!   refuses such a message at its end (`550 5.6.11` / `550 5.6.0`), so a
//!   stored body contains CRLF line ends only and no NUL.
//! - A line longer than the limit (1000 octets including CRLF, not counting
//!   a stuffing dot) is recorded; the message is refused at its end.
//! - [`BodyBuffer`] never holds more than its limit; past it, it drops what
//!   it had and only counts, while the scanner reads on to the terminator.

use memchr::{memchr, memchr3};

/// What was wrong with a body, found while streaming it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyFlags {
    /// A CR not followed by LF.
    pub bare_cr: bool,
    /// An LF not preceded by CR.
    pub bare_lf: bool,
    /// A NUL octet.
    pub nul: bool,
    /// A line longer than the text line limit.
    pub line_too_long: bool,
}

impl BodyFlags {
    /// True if any rule was broken.
    pub fn any(&self) -> bool {
        self.bare_cr || self.bare_lf || self.nul || self.line_too_long
    }
}

/// The first reason a body is refused, in the order the session answers:
/// bare CR/LF, then NUL, then size, then line length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyVerdict {
    /// Nothing wrong.
    Ok,
    /// `550 5.6.11`.
    BareCrOrLf,
    /// `550 5.6.0`.
    Nul,
    /// `552 5.3.4`.
    TooBig,
    /// `500 5.5.2`.
    LineTooLong,
}

impl BodyVerdict {
    /// Combines the line flags with the size overflow.
    pub fn from_flags(flags: BodyFlags, oversize: bool) -> Self {
        if flags.bare_cr || flags.bare_lf {
            BodyVerdict::BareCrOrLf
        } else if flags.nul {
            BodyVerdict::Nul
        } else if oversize {
            BodyVerdict::TooBig
        } else if flags.line_too_long {
            BodyVerdict::LineTooLong
        } else {
            BodyVerdict::Ok
        }
    }
}

/// Checks message content (already unstuffed) line by line: CRLF-only line
/// ends, no NUL, line length. Used directly for BDAT chunks.
#[derive(Clone, Debug)]
pub struct LineCheck {
    max_line: usize,
    /// Octets of the current line so far, CR/LF included.
    line_len: usize,
    /// The last octet was a CR whose follower is not known yet.
    pending_cr: bool,
    flags: BodyFlags,
}

impl LineCheck {
    /// A checker for lines of at most `max_line` octets including CRLF.
    pub fn new(max_line: usize) -> Self {
        LineCheck {
            max_line,
            line_len: 0,
            pending_cr: false,
            flags: BodyFlags::default(),
        }
    }

    /// At the start of a line (nothing seen since the last CRLF).
    pub fn at_line_start(&self) -> bool {
        self.line_len == 0
    }

    /// The flags so far (a pending final CR is not judged yet).
    pub fn flags(&self) -> BodyFlags {
        self.flags
    }

    /// The content does not end in the middle of a line.
    pub fn ends_with_line_end(&self) -> bool {
        self.line_len == 0
    }

    /// Inspects more content.
    pub fn push(&mut self, mut rest: &[u8]) {
        while !rest.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                if rest[0] == b'\n' {
                    self.grow(1);
                    self.end_line();
                    rest = &rest[1..];
                    continue;
                }
                self.flags.bare_cr = true;
            }
            match memchr3(b'\r', b'\n', 0, rest) {
                None => {
                    self.grow(rest.len());
                    return;
                }
                Some(i) => {
                    self.grow(i + 1);
                    match rest[i] {
                        b'\r' => self.pending_cr = true,
                        b'\n' => self.flags.bare_lf = true,
                        _ => self.flags.nul = true,
                    }
                    rest = &rest[i + 1..];
                }
            }
        }
    }

    /// Ends the content: a CR still pending is a bare CR.
    pub fn finish(&mut self) -> BodyFlags {
        if self.pending_cr {
            self.pending_cr = false;
            self.flags.bare_cr = true;
        }
        self.flags
    }

    fn grow(&mut self, n: usize) {
        self.line_len = self.line_len.saturating_add(n);
        if self.line_len > self.max_line {
            self.flags.line_too_long = true;
        }
    }

    fn end_line(&mut self) {
        if self.line_len > self.max_line {
            self.flags.line_too_long = true;
        }
        self.line_len = 0;
    }
}

/// Room kept in front of the body for the `Received:` header the node
/// prepends once the message is complete (typically 250-400 octets), so
/// the stored message is made without copying the body again.
pub const HEADER_ROOM: usize = 1024;

/// A body buffer that never holds more than `limit` octets. It grows on
/// demand (never reserving past the limit), so an idle or small session
/// costs little; once more than `limit` octets were offered it frees its
/// memory and only counts.
///
/// The first octet stored also reserves [`HEADER_ROOM`] in front of the
/// body: [`into_stored`](Self::into_stored) writes the trace header there
/// and hands the whole message out as `Bytes` over the same allocation.
#[derive(Debug)]
pub struct BodyBuffer {
    /// `front` octets of header room, then the body.
    buf: Vec<u8>,
    front: usize,
    limit: usize,
    total: u64,
    discarding: bool,
}

impl BodyBuffer {
    /// An empty buffer for at most `limit` octets.
    pub fn new(limit: usize) -> Self {
        BodyBuffer {
            buf: Vec::new(),
            front: 0,
            limit,
            total: 0,
            discarding: false,
        }
    }

    /// Appends content, or only counts it once over the limit or discarding.
    pub fn put(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        if self.discarding {
            return;
        }
        if self.oversize() {
            self.discard();
            return;
        }
        if self.front == 0 && !bytes.is_empty() {
            self.front = HEADER_ROOM;
            self.buf.resize(HEADER_ROOM, 0);
        }
        let needed = self.buf.len() + bytes.len();
        if needed > self.buf.capacity() {
            let target = needed
                .max(self.buf.capacity().saturating_mul(2))
                .max(4096)
                .min(self.limit + self.front);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The message as stored: `header` followed by the body, as one
    /// `Bytes`. The header goes into the room kept in front of the body, so
    /// the body is not copied again (only a header longer than
    /// [`HEADER_ROOM`] costs one copy).
    pub fn into_stored(mut self, header: &[u8]) -> bytes::Bytes {
        if header.len() <= self.front {
            let start = self.front - header.len();
            self.buf[start..self.front].copy_from_slice(header);
            bytes::Bytes::from(self.buf).slice(start..)
        } else {
            let body = self.as_slice();
            let mut stored = Vec::with_capacity(header.len() + body.len());
            stored.extend_from_slice(header);
            stored.extend_from_slice(body);
            bytes::Bytes::from(stored)
        }
    }

    /// Stops storing (the message is refused anyway) and frees the memory.
    /// Counting goes on, so [`oversize`](Self::oversize) stays exact.
    pub fn discard(&mut self) {
        self.discarding = true;
        self.buf = Vec::new();
        self.front = 0;
    }

    /// More than `limit` octets were offered.
    pub fn oversize(&self) -> bool {
        self.total > self.limit as u64
    }

    /// Octets offered so far (stored or not).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Would `more` octets push the body over the limit?
    pub fn would_overflow(&self, more: u64) -> bool {
        self.total.saturating_add(more) > self.limit as u64
    }

    /// The stored content.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.front..]
    }

    /// The stored content, by value (a copy; for tests and tools).
    pub fn into_vec(self) -> Vec<u8> {
        self.as_slice().to_vec()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DotState {
    /// Not after a line-start dot.
    None,
    /// A dot at the start of a line was just consumed.
    Dot,
    /// A line-start dot and then CR: an LF now ends DATA.
    DotCr,
}

/// Progress of one [`DataScanner::feed`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feed {
    /// Input octets consumed. After the end of data, the rest of the input
    /// belongs to the next (pipelined) command.
    pub consumed: usize,
    /// `CRLF.CRLF` was seen; the body is complete.
    pub ended: bool,
}

/// Streams the DATA phase: finds the one true terminator, unstuffs dots,
/// checks lines and stores content in a [`BodyBuffer`].
#[derive(Clone, Debug)]
pub struct DataScanner {
    lines: LineCheck,
    dot: DotState,
    ended: bool,
}

impl DataScanner {
    /// A scanner at the start of DATA content (the first line starts here).
    pub fn new(max_line: usize) -> Self {
        DataScanner {
            lines: LineCheck::new(max_line),
            dot: DotState::None,
            ended: false,
        }
    }

    /// The line flags so far.
    pub fn flags(&self) -> BodyFlags {
        self.lines.flags()
    }

    /// Has the terminator been seen?
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Consumes input up to and including the terminator, writing unstuffed
    /// content to `sink`. Never consumes past the terminator.
    pub fn feed(&mut self, input: &[u8], sink: &mut BodyBuffer) -> Feed {
        let mut i = 0;
        if self.ended {
            return Feed {
                consumed: 0,
                ended: true,
            };
        }
        while i < input.len() {
            match self.dot {
                DotState::Dot => {
                    if input[i] == b'\r' {
                        self.dot = DotState::DotCr;
                        i += 1;
                        continue;
                    }
                    // `.x`: the dot is dropped, `x` is content.
                    self.dot = DotState::None;
                }
                DotState::DotCr => {
                    if input[i] == b'\n' {
                        self.ended = true;
                        return Feed {
                            consumed: i + 1,
                            ended: true,
                        };
                    }
                    // `.\r` + not LF: dot dropped, the CR is content.
                    self.dot = DotState::None;
                    self.content(b"\r", sink);
                }
                DotState::None => {
                    if self.lines.at_line_start() && input[i] == b'.' {
                        self.dot = DotState::Dot;
                        i += 1;
                        continue;
                    }
                }
            }
            // Content up to and including the next LF (a CRLF line end
            // brings us back to a line start; a bare LF does not).
            let end = match memchr(b'\n', &input[i..]) {
                Some(pos) => i + pos + 1,
                None => input.len(),
            };
            self.content(&input[i..end], sink);
            i = end;
        }
        Feed {
            consumed: input.len(),
            ended: false,
        }
    }

    fn content(&mut self, bytes: &[u8], sink: &mut BodyBuffer) {
        self.lines.push(bytes);
        sink.put(bytes);
    }
}

/// Result of scanning one complete DATA phase with [`scan_data`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// The unstuffed content (empty if oversize).
    pub body: Vec<u8>,
    /// Line flags.
    pub flags: BodyFlags,
    /// Content exceeded the size limit.
    pub oversize: bool,
    /// Input octets up to and including the terminator.
    pub consumed: usize,
}

/// Scans `input` as one DATA phase; `None` if it holds no terminator.
/// A convenience over [`DataScanner`] for tests and fuzzing.
pub fn scan_data(input: &[u8], max_line: usize, max_size: usize) -> Option<Scanned> {
    let mut scanner = DataScanner::new(max_line);
    let mut sink = BodyBuffer::new(max_size);
    let feed = scanner.feed(input, &mut sink);
    feed.ended.then(|| Scanned {
        flags: scanner.flags(),
        oversize: sink.oversize(),
        body: sink.into_vec(),
        consumed: feed.consumed,
    })
}

/// Dot-stuffs a body for DATA and appends the terminator: the inverse of
/// [`scan_data`] for bodies with CRLF line ends only. A body that does not
/// end with CRLF gets one before the terminator.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut at_line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINE: usize = 1000;
    const SIZE: usize = 1 << 20;

    fn scan(input: &[u8]) -> Option<Scanned> {
        scan_data(input, LINE, SIZE)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let s = scan(b"Subject: a\r\n\r\nhello\r\n.\r\nQUIT\r\n").unwrap();
        assert_eq!(s.body, b"Subject: a\r\n\r\nhello\r\n");
        assert_eq!(s.consumed, b"Subject: a\r\n\r\nhello\r\n.\r\n".len());
        assert!(!s.flags.any());
        // The very first line may be the terminator: an empty message.
        let s = scan(b".\r\n").unwrap();
        assert!(s.body.is_empty());
        assert_eq!(s.consumed, 3);
    }

    #[test]
    fn smuggling_variants_never_terminate() {
        for variant in [
            &b"\n.\n"[..],
            b"\r.\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
            b"\r\n.\r\r\n",
        ] {
            let mut input = b"Subject: a\r\n\r\nbody".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            assert!(scan(&input).is_none(), "{variant:?} must not end DATA");
            // Followed by the real terminator, the whole thing is ONE
            // message, flagged.
            input.extend_from_slice(b"\r\n.\r\n");
            let s = scan(&input).unwrap();
            assert_eq!(s.consumed, input.len(), "{variant:?}");
            assert!(s.flags.any(), "{variant:?} must be flagged");
        }
        // A space before the dot is plain content, not a terminator.
        let s = scan(b"a\r\n .\r\nb\r\n.\r\n").unwrap();
        assert_eq!(s.body, b"a\r\n .\r\nb\r\n");
        assert!(!s.flags.any());
    }

    #[test]
    fn unstuffs_exactly() {
        let s = scan(b"a\r\n..\r\n...x\r\n.y\r\n \r\n.\r\n").unwrap();
        assert_eq!(s.body, b"a\r\n.\r\n..x\r\ny\r\n \r\n");
    }

    #[test]
    fn line_length_counts_without_stuffing_dot() {
        let mut ok = vec![b'a'; 998];
        ok.extend_from_slice(b"\r\n");
        let mut stuffed = vec![b'.'];
        stuffed.extend_from_slice(&ok); // 999 chars on the wire + CRLF
        let mut input = ok.clone();
        input.extend_from_slice(&stuffed);
        input.extend_from_slice(b".\r\n");
        let s = scan(&input).unwrap();
        assert!(!s.flags.line_too_long);
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        assert!(scan(&long).unwrap().flags.line_too_long);
    }

    #[test]
    fn size_limit_discards_but_finds_the_end() {
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend_from_slice(&[b'x'; 98]);
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b".\r\nNOOP\r\n");
        let s = scan_data(&input, LINE, 1000).unwrap();
        assert!(s.oversize);
        assert!(s.body.is_empty());
        assert_eq!(&input[s.consumed..], b"NOOP\r\n");
    }

    #[test]
    fn body_buffer_never_holds_or_reserves_more_than_its_limit() {
        let mut b = BodyBuffer::new(10_000);
        for _ in 0..99 {
            b.put(&[b'x'; 101]);
            assert!(b.as_slice().len() <= 10_000);
        }
        assert!(!b.oversize());
        assert_eq!(b.as_slice().len(), 9_999);
        let mut b = BodyBuffer::new(10_000);
        b.put(&[b'x'; 6_000]);
        b.put(&[b'x'; 3_000]);
        assert!(
            b.buf.capacity() <= 10_000 + HEADER_ROOM,
            "capacity {}",
            b.buf.capacity()
        );
        b.put(&[b'x'; 1_001]);
        assert!(b.oversize());
        assert_eq!(
            b.buf.capacity(),
            0,
            "memory is released once over the limit"
        );
        assert_eq!(b.total(), 10_001);
    }

    #[test]
    fn the_stored_message_shares_the_body_allocation() {
        let mut b = BodyBuffer::new(100_000);
        b.put(b"Subject: x\r\n\r\n");
        b.put(&[b'y'; 50_000]);
        let body_at = b.as_slice().as_ptr() as usize;
        let header = b"Received: from a by b; now\r\n";
        let stored = b.into_stored(header);
        assert_eq!(&stored[..header.len()], header);
        assert_eq!(
            &stored[header.len()..header.len() + 14],
            b"Subject: x\r\n\r\n"
        );
        assert_eq!(stored.len(), header.len() + 14 + 50_000);
        assert_eq!(
            stored.as_ptr() as usize + header.len(),
            body_at,
            "the body was copied"
        );

        // A header longer than the room still gives the right message.
        let mut b = BodyBuffer::new(100);
        b.put(b"body\r\n");
        let long = vec![b'h'; HEADER_ROOM + 1];
        let stored = b.into_stored(&long);
        assert_eq!(&stored[..long.len()], &long[..]);
        assert_eq!(&stored[long.len()..], b"body\r\n");
    }

    #[test]
    fn bdat_line_check_catches_split_crlf_and_trailing_cr() {
        let mut c = LineCheck::new(LINE);
        c.push(b"a\r");
        c.push(b"\nb\r");
        assert!(!c.flags().any());
        assert!(c.finish().bare_cr);
        let mut c = LineCheck::new(LINE);
        c.push(b"a\nb\r\n");
        assert!(c.finish().bare_lf);
        let mut c = LineCheck::new(LINE);
        c.push(b"a\0b\r\n");
        assert!(c.finish().nul);
    }

    fn feed_chunked(input: &[u8], cuts: &[usize]) -> Option<Scanned> {
        let mut scanner = DataScanner::new(LINE);
        let mut sink = BodyBuffer::new(SIZE);
        let mut pos = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(input.len());
        for b in bounds {
            if b < pos {
                continue;
            }
            let f = scanner.feed(&input[pos..b], &mut sink);
            pos += f.consumed;
            if f.ended {
                return Some(Scanned {
                    flags: scanner.flags(),
                    oversize: sink.oversize(),
                    body: sink.into_vec(),
                    consumed: pos,
                });
            }
        }
        None
    }

    fn crlf_body() -> impl Strategy<Value = Vec<u8>> {
        // Lines of arbitrary octets except CR, LF and NUL, joined by CRLF.
        proptest::collection::vec(
            proptest::collection::vec(
                any::<u8>().prop_filter("no CR/LF/NUL", |b| !matches!(b, b'\r' | b'\n' | 0)),
                0..40,
            )
            .prop_map(|mut line| {
                // Make leading dots common.
                if line.first().is_some_and(|b| *b < 64) {
                    line.insert(0, b'.');
                }
                line
            }),
            0..20,
        )
        .prop_map(|lines| {
            let mut out = Vec::new();
            for l in lines {
                out.extend_from_slice(&l);
                out.extend_from_slice(b"\r\n");
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn unstuff_of_stuff_is_identity(body in crlf_body()) {
            let wire = dot_stuff(&body);
            let s = scan(&wire).unwrap();
            prop_assert_eq!(s.consumed, wire.len());
            prop_assert_eq!(&s.body, &body);
            prop_assert!(!s.flags.any());
        }

        #[test]
        fn arbitrary_bytes_give_at_most_one_message(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(0u8), any::<u8>()],
                0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let whole = scan(&input);
            // Chunking never changes the outcome.
            prop_assert_eq!(&whole, &feed_chunked(&input, &cuts));
            if let Some(s) = whole {
                let head = &input[..s.consumed];
                // It ended exactly at CRLF.CRLF (or `.CRLF` as first line) ...
                prop_assert!(head == b".\r\n" || head.ends_with(b"\r\n.\r\n"));
                // ... and at the FIRST one: no earlier CRLF.CRLF was skipped,
                // so a second message cannot hide inside the first.
                let earlier = head[..head.len() - 3]
                    .windows(5)
                    .position(|w| w == b"\r\n.\r\n");
                prop_assert_eq!(earlier, None);
                // A clean body has CRLF line ends only and no NUL.
                if !s.flags.any() {
                    for (i, &b) in s.body.iter().enumerate() {
                        prop_assert!(b != 0);
                        if b == b'\n' { prop_assert!(i > 0 && s.body[i - 1] == b'\r'); }
                        if b == b'\r' { prop_assert!(s.body.get(i + 1) == Some(&b'\n')); }
                    }
                }
            }
        }
    }
}
