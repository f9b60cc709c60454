//! `queue summary`: pending messages by destination domain and age, like
//! Postfix's qshape, over one replica (every replica holds the whole
//! cluster's queue).

use std::collections::BTreeMap;

use relay_proto::admin as pb;
use relay_types::{MessageRecord, UnixMillis};

/// Upper bounds of the age buckets in minutes (qshape's doubling scale);
/// one more bucket, "160m+", holds everything older.
const BOUNDS_MIN: [u64; 6] = [5, 10, 20, 40, 80, 160];

/// The bucket labels, youngest first.
pub fn labels() -> Vec<String> {
    let mut labels = Vec::with_capacity(BOUNDS_MIN.len() + 1);
    let mut lower = 0;
    for upper in BOUNDS_MIN {
        labels.push(format!("{lower}-{upper}m"));
        lower = upper;
    }
    labels.push(format!("{lower}m+"));
    labels
}

/// The bucket of a message `age_ms` old: `[lower, upper)` minutes.
fn bucket(age_ms: u64) -> usize {
    BOUNDS_MIN
        .iter()
        .position(|&upper| age_ms < upper * 60_000)
        .unwrap_or(BOUNDS_MIN.len())
}

/// Counts `records` by pending recipient domain and age at `now`; domains
/// with the most messages first (ties by name).
pub fn summarize(
    records: &[MessageRecord],
    now: UnixMillis,
) -> (Vec<pb::DomainAges>, pb::DomainAges) {
    let width = BOUNDS_MIN.len() + 1;
    let empty = |domain: &str| pb::DomainAges {
        domain: domain.to_string(),
        total: 0,
        counts: vec![0; width],
    };
    let mut by_domain: BTreeMap<String, pb::DomainAges> = BTreeMap::new();
    let mut total = empty("");
    for record in records {
        let b = bucket(now.0.saturating_sub(record.received_at.0));
        total.total += 1;
        total.counts[b] += 1;
        let mut domains: Vec<String> = record
            .pending_indexes()
            .into_iter()
            .filter_map(|i| record.envelope.recipients.get(i as usize))
            .map(|r| r.domain())
            .collect();
        domains.sort();
        domains.dedup();
        for domain in domains {
            let row = by_domain.entry(domain).or_insert_with_key(|d| empty(d));
            row.total += 1;
            row.counts[b] += 1;
        }
    }
    let mut rows: Vec<pb::DomainAges> = by_domain.into_values().collect();
    rows.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.domain.cmp(&b.domain)));
    (rows, total)
}

#[cfg(test)]
mod tests {
    use relay_types::{Envelope, MessageId, MessageInfo, Recipient, RecipientStatus};

    use super::*;

    const MIN: u64 = 60_000;

    /// A message received `age_min` minutes before `NOW` with `to`; the
    /// recipients flagged `true` are already delivered.
    fn record(n: u8, age_min: u64, to: &[(&str, bool)]) -> MessageRecord {
        MessageRecord {
            id: MessageId([n; 16]),
            received_at: UnixMillis(NOW.0 - age_min * MIN),
            accepted_by: 1,
            owner: 1,
            envelope: Envelope {
                reverse_path: "s@sender.test".into(),
                recipients: to.iter().map(|(r, _)| Recipient::new(*r)).collect(),
                ..Default::default()
            },
            info: MessageInfo::default(),
            checksum: [0; 32],
            expires_at: UnixMillis(u64::MAX),
            recipients: to
                .iter()
                .map(|(_, done)| {
                    if *done {
                        RecipientStatus::Delivered { at: NOW }
                    } else {
                        RecipientStatus::Pending { last_reply: None }
                    }
                })
                .collect(),
            attempts: 0,
            next_attempt_at: UnixMillis(0),
            last_target: None,
            held: None,
        }
    }

    const NOW: UnixMillis = UnixMillis(1_000_000 * MIN);

    #[test]
    fn counts_pending_domains_by_age() {
        let records = [
            record(1, 1, &[("a@A.test", false), ("b@a.test", false)]),
            record(2, 7, &[("a@a.test", false), ("c@b.test", false)]),
            record(3, 200, &[("x@b.test", false), ("y@c.test", true)]),
        ];
        let (rows, total) = summarize(&records, NOW);
        assert_eq!(total.total, 3);
        assert_eq!(total.counts, [1, 1, 0, 0, 0, 0, 1]);
        let got: Vec<(&str, u64, &[u64])> = rows
            .iter()
            .map(|r| (r.domain.as_str(), r.total, r.counts.as_slice()))
            .collect();
        // A message counts once per domain however many recipients it has
        // there; delivered recipients (c.test) do not count.
        assert_eq!(
            got,
            [
                ("a.test", 2, &[1, 1, 0, 0, 0, 0, 0][..]),
                ("b.test", 2, &[0, 1, 0, 0, 0, 0, 1][..]),
            ]
        );
    }

    #[test]
    fn buckets_follow_the_qshape_scale() {
        assert_eq!(
            labels(),
            [
                "0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160m+"
            ]
        );
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(5 * 60_000 - 1), 0);
        assert_eq!(bucket(5 * 60_000), 1);
        assert_eq!(bucket(159 * 60_000), 5);
        assert_eq!(bucket(160 * 60_000), 6);
        assert_eq!(bucket(u64::MAX), 6);
    }
}
