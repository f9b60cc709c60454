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

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// The oldest format version this build reads.
pub const OLDEST_READABLE: u8 = 1;

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

/// Encodes a value in the current format. Encoding our types into a
/// `Vec` cannot fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_as(FORMAT_VERSION, value)
}

/// Encodes a value under an explicit version octet. Only tests use another
/// version than [`FORMAT_VERSION`] (to stand in for a newer release).
pub fn encode_as<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    postcard::to_io(value, &mut out).expect("postcard encoding into a Vec cannot fail");
    out
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
        assert_eq!(encode(&value)[0], FORMAT_VERSION);
    }
}
