//! Filter matching, shared by every replica and by queries.

use relay_types::{MessageFilter, MessageRecord, normalize_domain};

/// True if `record` matches every condition set in `filter`.
pub fn matches(filter: &MessageFilter, record: &MessageRecord) -> bool {
    if let Some(owner) = filter.owner {
        if record.owner != owner {
            return false;
        }
    }
    if let Some(held) = filter.held {
        if record.held.is_some() != held {
            return false;
        }
    }
    if let Some(before) = filter.received_before {
        if record.received_at >= before {
            return false;
        }
    }
    if let Some(from) = &filter.from {
        if !record.envelope.reverse_path.eq_ignore_ascii_case(from) {
            return false;
        }
    }
    if let Some(domain) = &filter.to_domain {
        let domain = normalize_domain(domain);
        if !record.envelope.recipients.iter().any(|r| r.domain() == domain) {
            return false;
        }
    }
    true
}
