//! Filter matching, shared by every replica and by queries.

use relay_types::{MessageFilter, MessageRecord, normalize_domain};

/// True if `record` matches every condition set in `filter`.
pub fn matches(filter: &MessageFilter, record: &MessageRecord) -> bool {
    if filter.owner.is_some_and(|owner| record.owner != owner) {
        return false;
    }
    if filter
        .held
        .is_some_and(|held| record.held.is_some() != held)
    {
        return false;
    }
    if filter
        .received_before
        .is_some_and(|before| record.received_at >= before)
    {
        return false;
    }
    if filter
        .from
        .as_ref()
        .is_some_and(|from| !record.envelope.reverse_path.eq_ignore_ascii_case(from))
    {
        return false;
    }
    if let Some(domain) = &filter.to_domain {
        let domain = normalize_domain(domain);
        if !record
            .envelope
            .recipients
            .iter()
            .any(|r| r.domain() == domain)
        {
            return false;
        }
    }
    true
}
