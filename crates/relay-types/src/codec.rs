//! The one binary encoding for entries and state records.
//!
//! bincode 2 with a fixed configuration: the same value always encodes to the
//! same bytes, which the state checksum relies on.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes that do not decode as the expected type.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct CodecError {
    /// The type that was expected.
    pub what: &'static str,
    /// The decoder's message.
    pub reason: String,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value. Encoding to a `Vec` cannot fail for our types.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("bincode encoding into a Vec cannot fail")
}

/// Decodes a value; trailing bytes are an error (a truncated or padded
/// record is corruption, not data).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let what = std::any::type_name::<T>();
    let (value, used) = decode_limited(bytes).map_err(|e| CodecError {
        what,
        reason: e.to_string(),
    })?;
    if used != bytes.len() {
        return Err(CodecError {
            what,
            reason: format!("{} trailing bytes", bytes.len() - used),
        });
    }
    Ok(value)
}

/// bincode with a read limit of 16 times `bytes.len()` (rounded up).
///
/// Without a limit, bincode allocates a `String`/byte vector of the length
/// the input announces *before* it checks that the input holds that many
/// bytes: 9 octets announcing 2^40 made the process abort on a failed
/// allocation (found by fuzz/log_entry; Raft RPC payloads and RocksDB
/// values are decoded here). The limit counts in-memory sizes, not encoded
/// ones: a varint `u64` of one octet claims 8, a `u128` 16, a byte buffer
/// its length. So a value that decodes claims at most 16 times its input,
/// and a limit of 16 x the input refuses nothing valid (a limit of 1 x
/// refused real snapshots); a bogus length can make it allocate at most
/// that. Inputs over 16 MiB (large snapshots, which come only from members
/// holding the cluster secret) decode without a limit. The limit only
/// affects decoding: encodings are unchanged.
fn decode_limited<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    fn with<T: DeserializeOwned, const LIMIT: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
    }
    match bytes.len() {
        0..=0x1000 => with::<T, 0x1_0000>(bytes),
        0x1001..=0x1_0000 => with::<T, 0x10_0000>(bytes),
        0x1_0001..=0x10_0000 => with::<T, 0x100_0000>(bytes),
        0x10_0001..=0x100_0000 => with::<T, 0x1000_0000>(bytes),
        _ => bincode::serde::decode_from_slice(bytes, config()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_announced_length_is_an_error_not_an_abort() {
        // fuzz/artifacts/log_entry/oom-huge-length-min: a string length of
        // 2^40 (varint marker 253 = u64 follows) with nothing behind it.
        let bytes = [253, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(decode::<String>(&bytes).is_err());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        assert!(decode::<Vec<String>>(&[1, 253, 0, 0, 0, 0, 0, 1, 0, 0]).is_err());
    }

    #[test]
    fn values_at_every_limit_step_still_decode() {
        for len in [0, 1, 4090, 4096, 5000, 65_530, 65_536, 70_000, 1_048_600] {
            let value = (vec!["x".repeat(len)], bytes::Bytes::from(vec![7u8; len]));
            let encoded = encode(&value);
            let back: (Vec<String>, bytes::Bytes) = decode(&encoded).expect("decodes");
            assert_eq!(back, value, "len {len}");
        }
    }

    #[test]
    fn small_integers_that_claim_more_than_they_take_still_decode() {
        // A one-octet varint claims 8 (u64) or 16 (u128) octets against
        // the limit; the snapshot test failed on this with a 1 x limit.
        for n in [1usize, 500, 4_093, 4_094, 70_000, 1_000_000] {
            let wide = vec![1u128; n];
            let back: Vec<u128> = decode(&encode(&wide)).expect("u128s decode");
            assert_eq!(back, wide);
            let narrow = vec![1u64; n];
            let back: Vec<u64> = decode(&encode(&narrow)).expect("u64s decode");
            assert_eq!(back, narrow);
        }
    }
}
