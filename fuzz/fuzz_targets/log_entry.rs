//! The replicated-log codec (`relay_types::{decode, encode}`: a format
//! version octet, then postcard) on arbitrary bytes, for every type that is decoded
//! from RocksDB or from a peer:
//! - `Entry<relay_store::TypeConfig>`: a `raft_log` column-family value;
//! - `Vec<Command>`: the application data of entries (and of the `Submit`
//!   RPC), several in a row;
//! - `AppendEntriesRequest`, `VoteRequest`, `InstallSnapshotRequest`: the
//!   Raft RPC payloads relay-cluster's service decodes from the network;
//! - `MessageRecord`: a `messages` column-family value.
//!
//! Properties: decoding never panics or over-allocates; whatever decodes
//! re-encodes to bytes that decode to an equal value, and encoding that value
//! again gives the same bytes (the state checksum relies on one value having
//! one encoding); and every decoded command can be applied to the pure queue
//! state machine (`relay_queue::MemQueue`, the reference the RocksDB store is
//! checked against) in order without a panic, deterministically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{Entry, EntryPayload};
use relay_queue::MemQueue;
use relay_store::TypeConfig;
use relay_types::{Command, MessageRecord, decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// decode → encode → decode → encode: both decodes agree (by their
/// encodings, for types without `PartialEq`) and the encoding is stable.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = decode(bytes).ok()?;
    let first = encode(&value);
    let again: T = match decode(&first) {
        Ok(v) => v,
        Err(e) => panic!("own encoding does not decode: {e}"),
    };
    assert_eq!(encode(&again), first, "encoding is not stable");
    Some(again)
}

fn round_trip_eq<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Option<T> {
    let value: T = decode(bytes).ok()?;
    let back: T = round_trip(&encode(&value)).expect("own encoding decodes");
    assert_eq!(back, value, "decode(encode(x)) != x");
    Some(value)
}

/// Applies commands in order to two replicas; both must agree.
fn apply_all<'a>(commands: impl Iterator<Item = (u64, &'a Command)> + Clone) {
    let mut a = MemQueue::default();
    let mut b = MemQueue::default();
    for (index, command) in commands {
        let ra = a.apply(index, command);
        let rb = b.apply(index, command);
        assert_eq!(ra, rb, "apply is not deterministic");
    }
    assert_eq!(a, b);
}

fn normal_payloads<'a>(
    entries: &'a [Entry<TypeConfig>],
) -> impl Iterator<Item = (u64, &'a Command)> + Clone {
    entries.iter().filter_map(|e| match &e.payload {
        EntryPayload::Normal(c) => Some((e.log_id.index, c)),
        _ => None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            if let Some(entry) = round_trip_eq::<Entry<TypeConfig>>(bytes) {
                apply_all(normal_payloads(std::slice::from_ref(&entry)));
            }
        }
        1 => {
            if let Some(commands) = round_trip_eq::<Vec<Command>>(bytes) {
                apply_all(commands.iter().enumerate().map(|(i, c)| (i as u64 + 1, c)));
            }
        }
        2 => {
            if let Some(rpc) = round_trip::<AppendEntriesRequest<TypeConfig>>(bytes) {
                apply_all(normal_payloads(&rpc.entries));
            }
        }
        3 => {
            round_trip_eq::<VoteRequest<u64>>(bytes);
        }
        4 => {
            round_trip_eq::<InstallSnapshotRequest<TypeConfig>>(bytes);
        }
        _ => {
            if let Some(record) = round_trip_eq::<MessageRecord>(bytes) {
                let _ = (record.state(), record.pending_indexes());
            }
        }
    }
});
