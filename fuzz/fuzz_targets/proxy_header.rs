//! `relay_smtp::proxy::parse`, the PROXY protocol v1/v2 header parser, on
//! any bytes.
//!
//! Input: the octets a load balancer's connection starts with.
//!
//! Properties (besides no panic / no hang):
//! - a complete header's length is within the input, at most 107 octets
//!   for v1 and 16 + 4096 for v2, and parsing just those octets gives the
//!   same header (nothing after the header is read);
//! - every proper prefix of a complete header is `Incomplete` (the reader
//!   never decides early on a split header);
//! - a header that names addresses re-encodes (v1 or v2) to octets that
//!   parse back to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_smtp::proxy::{
    MAX_V1_LINE, MAX_V2_PAYLOAD, Parsed, encode_v1, encode_v2, parse,
};

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Complete { header, len }) = parse(data) else {
        return;
    };
    assert!(len <= data.len());
    match header.version {
        1 => assert!(len <= MAX_V1_LINE),
        2 => assert!(len <= 16 + MAX_V2_PAYLOAD),
        v => panic!("version {v}"),
    }
    assert_eq!(parse(&data[..len]), Ok(Parsed::Complete { header, len }));
    for cut in 0..len {
        assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
    }
    if let Some((source, destination)) = header.addresses {
        let again = if header.version == 1 {
            encode_v1(source, destination)
        } else {
            encode_v2(source, destination)
        };
        match parse(&again) {
            Ok(Parsed::Complete { header: h, len }) => {
                assert_eq!(len, again.len());
                assert_eq!(h.addresses, Some((source, destination)));
            }
            other => panic!("re-encoded header does not parse: {other:?}"),
        }
    }
});
