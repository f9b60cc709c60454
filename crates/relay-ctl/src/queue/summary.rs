//! `relayctl queue summary`: pending messages by destination domain and
//! age, like Postfix's qshape.

use relay_proto::admin::{DomainAges, QueueSummaryRequest};
use serde::Serialize;

use super::FilterArgs;
use crate::client::{Admin, CliError};
use crate::output::{self, outln};

/// One row: a domain (or the total) and its counts per age bucket.
#[derive(Debug, Serialize)]
struct Row {
    domain: String,
    total: u64,
    /// Parallel to `SummaryOutput::buckets`.
    counts: Vec<u64>,
}

impl From<DomainAges> for Row {
    fn from(d: DomainAges) -> Self {
        Row {
            domain: d.domain,
            total: d.total,
            counts: d.counts,
        }
    }
}

/// `queue summary --json`.
#[derive(Debug, Serialize)]
struct SummaryOutput {
    answered_by: u64,
    /// Age bucket labels, youngest first ("0-5m" ... "160m+").
    buckets: Vec<String>,
    /// Every message once (`domain` is "").
    total: Row,
    /// Per destination domain, most messages first; a message with pending
    /// recipients in two domains counts in both.
    domains: Vec<Row>,
}

pub async fn run(admin: &mut Admin, filter: FilterArgs, as_json: bool) -> Result<(), CliError> {
    let reply = admin
        .client
        .queue_summary(QueueSummaryRequest {
            filter: Some(filter.to_proto()),
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    let out = SummaryOutput {
        answered_by: reply.answered_by,
        buckets: reply.buckets,
        total: reply.total.unwrap_or_default().into(),
        domains: reply.domains.into_iter().map(Row::from).collect(),
    };
    if as_json {
        output::json(&out);
        return Ok(());
    }
    let mut header = vec!["DOMAIN".to_string(), "TOTAL".to_string()];
    header.extend(out.buckets.iter().cloned());
    let line = |name: &str, row: &Row| {
        let mut cells = vec![name.to_string(), row.total.to_string()];
        cells.extend(row.counts.iter().map(u64::to_string));
        cells
    };
    let mut rows = vec![line("TOTAL", &out.total)];
    rows.extend(out.domains.iter().map(|d| line(&d.domain, d)));
    output::table_dyn(&header, &rows);
    outln!("(node {}'s replica)", out.answered_by);
    Ok(())
}
