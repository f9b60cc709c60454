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
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError {
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
