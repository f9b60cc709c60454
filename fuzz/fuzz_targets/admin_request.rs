//! Admin gRPC request decoding: prost-decode each admin request message of
//! relay-proto (`proto/admin.proto`) from arbitrary bytes and run it through
//! the node's conversion and validation (`relay_node::admin::convert`, plus
//! the same checks `AdminService` makes before it proposes anything:
//! action names, route domain/targets/TLS policy, membership changes).
//!
//! Properties: nothing panics; prost round-trips (`decode(encode(m)) == m`);
//! a parsed message id prints back to text that parses to the same id; a
//! filter's domain is normalised (lower case, no trailing dot) and `held`
//! agrees with the state; an accepted route target has a host and a
//! non-zero port and survives `host:port` re-formatting; a TLS policy name
//! survives Display → FromStr; a membership change that parses keeps the id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use relay_cluster::MemberChange;
use relay_node::admin::convert;
use relay_proto::admin as pb;
use relay_types::{MessageState, TlsPolicy, UnixMillis, normalize_domain};

const NOW: UnixMillis = UnixMillis(1_767_225_600_000);

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("own encoding decodes");
    assert_eq!(again, m, "prost round trip");
    Some(m)
}

/// Lower case, no trailing dot. (Not "normalising again changes nothing":
/// `normalize_domain` is not idempotent when whitespace precedes trailing
/// dots; see fuzz/README.md.)
fn is_normal(d: &str) -> bool {
    !d.ends_with('.') && !d.bytes().any(|b| b.is_ascii_uppercase())
}

fn check_id(text: &str) {
    if let Ok(id) = convert::parse_id(text) {
        let printed = id.to_string();
        assert_eq!(
            convert::parse_id(&printed).ok(),
            Some(id),
            "{text:?} -> {printed}"
        );
    }
}

fn check_filter(f: Option<&pb::QueueFilter>) {
    let Ok((filter, state)) = convert::filter(f, NOW) else {
        return;
    };
    if let Some(f) = f {
        // The replicated filter carries the normalised domain, the form
        // `Recipient::domain()` is compared with at apply time.
        assert_eq!(
            filter.to_domain,
            f.to_domain.as_deref().map(normalize_domain)
        );
    }
    if let Some(d) = &filter.to_domain {
        assert!(is_normal(d), "{d:?}");
    }
    assert_eq!(filter.held, state.map(|s| s == MessageState::Held));
    if let Some(before) = filter.received_before {
        assert!(before.0 <= NOW.0);
    }
    if let Some(f) = f {
        assert_eq!(filter.owner, f.owner);
    }
}

fn check_route(info: &pb::RouteInfo) {
    let domain = normalize_domain(&info.domain);
    if domain.is_empty() || domain.contains(char::is_whitespace) {
        return; // INVALID_ARGUMENT
    }
    for target in &info.targets {
        let Ok((host, port)) = relay_delivery::transport::parse_target(target) else {
            continue;
        };
        assert!(!host.is_empty() && port != 0, "{target:?}");
        let again = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        assert_eq!(
            relay_delivery::transport::parse_target(&again),
            Ok((host, port)),
            "{target:?} re-formatted as {again:?}"
        );
    }
    if !info.tls.is_empty()
        && let Ok(policy) = info.tls.parse::<TlsPolicy>()
    {
        assert_eq!(policy.to_string().parse::<TlsPolicy>(), Ok(policy));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => {
            if let Some(r) = round_trip::<pb::QueueActionRequest>(bytes) {
                let known = ["hold", "release", "delete", "flush"].contains(&r.action.as_str());
                if known {
                    if !r.ids.is_empty() {
                        r.ids.iter().for_each(|id| check_id(id));
                    } else if r.all {
                        check_filter(r.filter.as_ref());
                    }
                }
                let _ = (r.by.trim(), r.reason.trim());
            }
        }
        1 => {
            if let Some(r) = round_trip::<pb::ListQueueRequest>(bytes) {
                check_filter(r.filter.as_ref());
            }
        }
        2 => {
            if let Some(r) = round_trip::<pb::MessageRequest>(bytes) {
                check_id(&r.id);
            }
        }
        3 => {
            if let Some(r) = round_trip::<pb::SetRouteRequest>(bytes)
                && let Some(info) = &r.route
            {
                check_route(info);
            }
        }
        4 => {
            if let Some(r) = round_trip::<pb::RemoveRouteRequest>(bytes) {
                assert!(is_normal(&normalize_domain(&r.domain)));
            }
        }
        5 => {
            if let Some(r) = round_trip::<pb::MembershipRequest>(bytes) {
                let wire = relay_proto::raft::MembershipChange {
                    action: r.action.clone(),
                    id: r.id,
                    addr: r.addr.clone(),
                };
                match MemberChange::from_wire(&wire) {
                    Ok(MemberChange::Add { id, addr }) => {
                        assert_eq!((id, addr.as_str()), (r.id, r.addr.as_str()));
                        assert!(!addr.is_empty());
                    }
                    Ok(MemberChange::Promote(id) | MemberChange::Remove(id)) => {
                        assert_eq!(id, r.id)
                    }
                    Err(_) => {}
                }
            }
        }
        6 => {
            round_trip::<pb::FailoverRequest>(bytes);
        }
        _ => {
            // The remaining requests carry no fields; unknown fields must
            // still be skipped cleanly.
            round_trip::<pb::StatusRequest>(bytes);
            round_trip::<pb::DrillRequest>(bytes);
            round_trip::<pb::SnapshotRequest>(bytes);
            round_trip::<pb::ListRoutesRequest>(bytes);
        }
    }
});
