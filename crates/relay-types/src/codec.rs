//! The one binary encoding for log entries, state records, snapshots and
//! Raft payloads, with an explicit format version.
//!
//! Every encoded value is one format-version octet followed by the value in
//! postcard (serde, varint integers, no field names). The same value always
//! encodes to the same bytes, which the state checksum relies on.
//!
//! # Versions and rolling upgrades
//!
//! [`FORMAT_VERSION`] is the newest format this build writes and reads;
//! [`OLDEST_READABLE`] the oldest it still reads. A value whose version
//! octet is newer than this build is refused with an error that names both
//! versions: a node never guesses at bytes a newer release wrote. The rule
//! that keeps a mixed cluster safe (docs/design.md, "Formats and upgrades"):
//! release N+1 reads everything release N writes, and writes a newer format
//! or a new entry kind only once every voter reports (in its node status) a
//! format version that knows it. So N and N+1 can run side by side during a
//! rolling upgrade, and a node of release N only ever sees an N+1 format if
//! an operator skipped that rule, and then it stops with that message
//! instead of misreading.
//!
//! # Each value in the oldest format that holds it
//! [`encode`] writes a value in the oldest format that can hold it, not
//! always the newest: format 2 only added route shaping ([`crate::Route`]),
//! so a value without shaping is written as format 1, the same bytes
//! releases of format 1 write, and readable by them; a value carrying
//! shaping is written as format 2. So a cluster keeps running with mixed
//! releases as long as nobody sets shaping, and setting it is refused until
//! every voter reports format 2 (the admin service checks that before it
//! proposes). The state checksum is unaffected: every release of format 2
//! encodes a value to the same bytes.
//!
//! Postcard writes no field names or lengths, so a type whose shape changed
//! between formats picks its shape from the version being written or read;
//! [`encode`] and [`decode`] tell it through a thread-local context (the
//! only way to pass it through serde), set for the duration of one call.
//! Such a type, while encoding in an older format, calls `needs_version`
//! when the value does not fit, and [`encode`] encodes again in that
//! format. Formats and what they added:
//!
//! | format | adds |
//! |---|---|
//! | 1 | everything before route shaping |
//! | 2 | `Route::shaping` (concurrency and rate limit per route) |

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The newest format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 2;

/// The oldest format version this build reads.
pub const OLDEST_READABLE: u8 = 1;

/// The oldest format version this build writes (for values that fit it).
pub const OLDEST_WRITTEN: u8 = 1;

/// The format that added route shaping: a shaped route is proposed only
/// once every voter reads it.
pub const SHAPING_FORMAT: u8 = 2;

/// What the value being encoded or decoded on this thread is read or
/// written as (see "Each value in the oldest format that holds it").
#[derive(Clone, Copy)]
struct Context {
    /// The version being written.
    encoding: u8,
    /// The oldest version that can hold what was written so far.
    needed: u8,
    /// The version being read.
    decoding: u8,
}

/// Outside [`encode`] and [`decode`] (serde with another format, e.g.
/// JSON in tests) types take their newest shape.
const OUTSIDE: Context = Context {
    encoding: FORMAT_VERSION,
    needed: OLDEST_WRITTEN,
    decoding: FORMAT_VERSION,
};

thread_local! {
    static CONTEXT: std::cell::Cell<Context> = const { std::cell::Cell::new(OUTSIDE) };
}

/// Sets the context for one call, restoring the previous one on drop (an
/// encode inside a `Serialize` impl, or a panic, leaves it as it was).
struct Scoped(Context);

impl Scoped {
    fn set(context: Context) -> Scoped {
        Scoped(CONTEXT.with(|c| c.replace(context)))
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        CONTEXT.with(|c| c.set(self.0));
    }
}

/// The format version being written on this thread.
pub(crate) fn encoding_version() -> u8 {
    CONTEXT.with(|c| c.get().encoding)
}

/// The format version being read on this thread.
pub(crate) fn decoding_version() -> u8 {
    CONTEXT.with(|c| c.get().decoding)
}

/// The value being encoded needs at least format `version`.
pub(crate) fn needs_version(version: u8) {
    CONTEXT.with(|c| {
        let mut context = c.get();
        context.needed = context.needed.max(version);
        c.set(context);
    });
}

/// Bytes that do not decode as the expected type.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid encoding of the type.
    #[error("cannot decode {what}: {reason}")]
    Invalid {
        /// The type that was expected.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// Written by a newer release (or an older one no longer read).
    #[error(
        "cannot decode {what}: format version {found} is not readable by this build \
         (it reads versions {OLDEST_READABLE} to {FORMAT_VERSION}); was it written by a newer \
         release? Upgrade this node before it rejoins"
    )]
    UnknownVersion {
        /// The type that was expected.
        what: &'static str,
        /// The version octet found.
        found: u8,
    },
}

impl CodecError {
    /// The format version found, when that is why decoding failed.
    pub fn unknown_version(&self) -> Option<u8> {
        match self {
            CodecError::UnknownVersion { found, .. } => Some(*found),
            CodecError::Invalid { .. } => None,
        }
    }
}

/// Encodes a value in the oldest format that holds it (see "Each value in
/// the oldest format that holds it"). Encoding our types into a `Vec`
/// cannot fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut version = OLDEST_WRITTEN;
    loop {
        let (out, needed) = encode_in(version, value);
        if needed <= version {
            return out;
        }
        // Rare (a shaped route): encode once more in the format it needs.
        version = needed.min(FORMAT_VERSION);
    }
}

/// Encodes a value in format `version`, whatever it holds. Only tests use
/// this (to write an older format, or stand in for a newer release).
pub fn encode_as<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    encode_in(version, value).0
}

/// `value` in format `version`, and the oldest format that holds it.
fn encode_in<T: Serialize>(version: u8, value: &T) -> (Vec<u8>, u8) {
    let _scope = Scoped::set(Context {
        encoding: version,
        needed: OLDEST_WRITTEN,
        ..OUTSIDE
    });
    let mut out = vec![version];
    postcard::to_io(value, &mut out).expect("postcard encoding into a Vec cannot fail");
    let needed = CONTEXT.with(|c| c.get().needed);
    (out, needed)
}

/// Decodes a value; a format version this build does not read is an error
/// naming it, and so are trailing bytes (a truncated or padded record is
/// corruption, not data).
///
/// Decoding allocates no more than the input could hold: postcard reads a
/// byte string or text only when the input has that many bytes left, and
/// serde caps what a sequence reserves ahead, so a bogus length (9 octets
/// announcing 2^40) is an error, not an aborted allocation.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let what = std::any::type_name::<T>();
    let Some((&version, payload)) = bytes.split_first() else {
        return Err(CodecError::Invalid {
            what,
            reason: "empty input (no format version)".into(),
        });
    };
    if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&version) {
        return Err(CodecError::UnknownVersion {
            what,
            found: version,
        });
    }
    let _scope = Scoped::set(Context {
        decoding: version,
        ..OUTSIDE
    });
    let (value, rest) = postcard::take_from_bytes(payload).map_err(|e| CodecError::Invalid {
        what,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CodecError::Invalid {
            what,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_announced_length_is_an_error_not_an_abort() {
        // A length of 2^40 (varint) with nothing behind it.
        let bytes = [FORMAT_VERSION, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
        assert!(decode::<String>(&bytes).is_err());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        assert!(decode::<Vec<String>>(&bytes).is_err());
        assert!(decode::<bytes::Bytes>(&bytes).is_err());
    }

    #[test]
    fn values_of_every_size_round_trip() {
        for len in [0, 1, 4090, 4096, 5000, 65_530, 65_536, 70_000, 1_048_600] {
            let value = (vec!["x".repeat(len)], bytes::Bytes::from(vec![7u8; len]));
            let encoded = encode(&value);
            let back: (Vec<String>, bytes::Bytes) = decode(&encoded).expect("decodes");
            assert_eq!(back, value, "len {len}");
        }
        let wide = vec![u128::MAX; 1000];
        assert_eq!(decode::<Vec<u128>>(&encode(&wide)).unwrap(), wide);
    }

    #[test]
    fn a_newer_format_version_is_refused_by_name() {
        let newer = encode_as(FORMAT_VERSION + 1, &"hello".to_string());
        let err = decode::<String>(&newer).unwrap_err();
        assert_eq!(err.unknown_version(), Some(FORMAT_VERSION + 1));
        let text = err.to_string();
        assert!(
            text.contains(&format!("format version {}", FORMAT_VERSION + 1)),
            "{text}"
        );
        assert!(decode::<String>(&encode_as(0, &"x")).is_err());
        assert!(decode::<String>(&[]).is_err());
    }

    #[test]
    fn trailing_bytes_are_corruption() {
        let mut bytes = encode(&7u64);
        bytes.push(0);
        let err = decode::<u64>(&bytes).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn the_same_value_encodes_to_the_same_bytes() {
        let value = std::collections::BTreeMap::from([(3u64, "c"), (1, "a"), (2, "b")]);
        assert_eq!(encode(&value), encode(&value.clone()));
        // Nothing in it needs a newer format than the oldest written.
        assert_eq!(encode(&value)[0], OLDEST_WRITTEN);
    }

    use crate::{Command, Rate, Route, Shaping, TlsPolicy};

    /// A route as format 1 (every release before shaping) wrote it:
    /// version 1, one target "a:25", `TlsPolicy::Opportunistic`.
    const ROUTE_V1: [u8; 8] = [1, 1, 4, b'a', b':', b'2', b'5', 1];

    fn shaped() -> Route {
        Route {
            targets: vec!["a:25".into(), "b:2525".into()],
            tls: TlsPolicy::Required,
            shaping: Shaping {
                concurrency: Some(3),
                rate: Some(Rate {
                    messages: 10,
                    per_secs: 1,
                }),
            },
        }
    }

    #[test]
    fn a_format_1_route_reads_with_default_shaping() {
        let route: Route = decode(&ROUTE_V1).expect("format 1 route decodes");
        assert_eq!(
            route,
            Route::new(vec!["a:25".into()], TlsPolicy::Opportunistic)
        );
        assert!(route.shaping.is_default());
    }

    #[test]
    fn an_unshaped_route_is_written_as_format_1_byte_for_byte() {
        // So releases of format 1 read it, and the state checksum of a
        // mixed cluster agrees.
        let route = Route::new(vec!["a:25".into()], TlsPolicy::Opportunistic);
        assert_eq!(encode(&route), ROUTE_V1);
        let command = Command::SetRoute {
            domain: "d.test".into(),
            route,
        };
        assert_eq!(encode(&command)[0], 1);
        assert_eq!(decode::<Command>(&encode(&command)).unwrap(), command);
    }

    #[test]
    fn a_shaped_route_is_written_as_format_2_and_round_trips() {
        let route = shaped();
        let bytes = encode(&route);
        assert_eq!(bytes[0], 2, "shaping needs format 2");
        assert_eq!(decode::<Route>(&bytes).unwrap(), route);
        // The same value gives the same bytes every time.
        assert_eq!(encode(&route.clone()), bytes);
        // Concurrency alone, rate alone.
        for shaping in [
            Shaping {
                concurrency: Some(1),
                rate: None,
            },
            Shaping {
                concurrency: None,
                rate: Some(Rate {
                    messages: 30,
                    per_secs: 60,
                }),
            },
        ] {
            let route = Route {
                shaping,
                ..shaped()
            };
            assert_eq!(decode::<Route>(&encode(&route)).unwrap(), route);
        }
    }

    #[test]
    fn one_shaped_route_makes_the_whole_value_format_2() {
        // Every route inside takes the format-2 shape, unshaped ones too,
        // or the reader would misalign.
        let batch = Command::Batch(vec![
            Command::SetRoute {
                domain: "plain.test".into(),
                route: Route::new(vec!["p:25".into()], TlsPolicy::None),
            },
            Command::SetRoute {
                domain: "shaped.test".into(),
                route: shaped(),
            },
            Command::SetRoute {
                domain: "plain2.test".into(),
                route: Route::new(vec!["q:25".into()], TlsPolicy::None),
            },
        ]);
        let bytes = encode(&batch);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<Command>(&bytes).unwrap(), batch);
        let routes = vec![shaped(), Route::new(vec!["p:25".into()], TlsPolicy::None)];
        assert_eq!(decode::<Vec<Route>>(&encode(&routes)).unwrap(), routes);
    }

    #[test]
    fn a_format_2_route_is_not_misread_as_format_1() {
        // Format-2 bytes under a format-1 octet (what a reader of format 1
        // would try) do not decode as a route: trailing bytes.
        let mut bytes = encode(&shaped());
        bytes[0] = 1;
        assert!(decode::<Route>(&bytes).is_err());
        // And format-1 bytes under a format-2 octet are not read either.
        let mut old = ROUTE_V1.to_vec();
        old[0] = 2;
        assert!(decode::<Route>(&old).is_err());
    }

    #[test]
    fn rates_parse_and_print() {
        for (text, messages, per_secs) in [("10/s", 10, 1), ("30/m", 30, 60), ("100/h", 100, 3600)]
        {
            let rate: Rate = text.parse().unwrap();
            assert_eq!((rate.messages, rate.per_secs), (messages, per_secs));
            assert_eq!(rate.to_string(), text);
        }
        for bad in ["0/s", "10", "x/s", "10/d", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let rate: Rate = "10/s".parse().unwrap();
        assert_eq!(rate.spacing_ms(1), 100);
        assert_eq!(rate.spacing_ms(3), 300);
        assert_eq!("30/m".parse::<Rate>().unwrap().spacing_ms(1), 2000);
    }
}
