//! `/`: the status page. Server-rendered HTML that refreshes itself, no
//! script: a cluster verdict, one row per node with a light, routes with
//! the last delivery result per target, and the queue.
//!
//! The rows come from [`Cluster::status`](relay_cluster::Cluster::status),
//! which asks every member over the NodeStatus RPC (a member that does not
//! answer within its timeout is unreachable). Rendering is a pure function
//! of [`StatusView`], so the lights and the verdict are unit-tested.
//!
//! Lights:
//! - green: answered, knows the leader, voter, at most [`LAG_AMBER`]
//!   entries behind the leader's log;
//! - amber: answered, but behind, without a leader, a candidate, or a
//!   learner;
//! - red: did not answer.

use std::fmt::Write as _;

use relay_cluster::ClusterStatus;
use relay_types::{NodeId, QueueCounts, Route, UnixMillis};

use crate::health::Readiness;
use crate::recent::TargetResult;

/// A node more entries than this behind the leader's log is amber.
pub const LAG_AMBER: u64 = 100;
/// Seconds between automatic refreshes.
pub const REFRESH_SECONDS: u32 = 5;

/// A node's light.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Light {
    /// In sync.
    Green,
    /// Answering, but not fully in sync.
    Amber,
    /// Not answering.
    Red,
}

impl Light {
    fn name(self) -> &'static str {
        match self {
            Light::Green => "green",
            Light::Amber => "amber",
            Light::Red => "red",
        }
    }
}

/// One row of the node table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// Node id.
    pub id: NodeId,
    /// Raft address.
    pub addr: String,
    /// Voter or learner.
    pub voter: bool,
    /// Its role, or `unreachable`.
    pub role: String,
    /// Applied index (0 if unknown).
    pub applied: u64,
    /// Entries behind the leader's log (0 if unknown).
    pub lag: u64,
    /// Age of the oldest entry it lacks, as the leader measures it.
    pub lag_millis: Option<u64>,
    /// Queue size on its replica (None if unknown).
    pub queue_total: Option<u64>,
    /// The light.
    pub light: Light,
    /// Why the light is what it is.
    pub note: String,
}

/// One route row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRow {
    /// Domain.
    pub domain: String,
    /// The route.
    pub route: Route,
    /// Last committed result per target, in `route.targets` order.
    pub last: Vec<Option<TargetResult>>,
}

/// Everything the page shows.
#[derive(Clone, Debug)]
pub struct StatusView {
    /// The node rendering the page.
    pub this_node: NodeId,
    /// This node's readiness.
    pub readiness: Readiness,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// This node's term.
    pub term: u64,
    /// One row per member.
    pub nodes: Vec<NodeRow>,
    /// Routes.
    pub routes: Vec<RouteRow>,
    /// Queue counts on this replica.
    pub queue: QueueCounts,
    /// Age of the oldest queued message, seconds.
    pub oldest_age_seconds: Option<u64>,
    /// When rendered (RFC 3339-ish UTC text).
    pub generated_at: String,
    /// When rendered, for ages.
    pub now: UnixMillis,
}

/// The rows for a cluster status.
pub fn node_rows(status: &ClusterStatus) -> Vec<NodeRow> {
    status
        .members
        .iter()
        .map(|m| {
            let reply = m.reply.as_ref();
            let knows_leader = reply.and_then(|r| r.leader).is_some();
            let (light, note) = if !m.reachable {
                (Light::Red, "unreachable: did not answer".to_string())
            } else if !knows_leader {
                (Light::Amber, "no leader known".to_string())
            } else if m.role == "candidate" || m.role == "shutdown" {
                (Light::Amber, m.role.clone())
            } else if !m.voter {
                (Light::Amber, "learner (not a voter yet)".to_string())
            } else if m.lag > LAG_AMBER {
                (Light::Amber, format!("{} entries behind", m.lag))
            } else {
                (Light::Green, "in sync".to_string())
            };
            NodeRow {
                id: m.id,
                addr: m.addr.clone(),
                voter: m.voter,
                role: m.role.clone(),
                applied: m.applied,
                lag: m.lag,
                lag_millis: m.lag_millis,
                queue_total: reply
                    .and_then(|r| r.queue.as_ref())
                    .map(|q| q.queued + q.deferred + q.held),
                light,
                note,
            }
        })
        .collect()
}

/// The cluster verdict: a light and one sentence.
pub fn verdict(view: &StatusView) -> (Light, String) {
    let voters: Vec<&NodeRow> = view.nodes.iter().filter(|n| n.voter).collect();
    let quorum = voters.len() / 2 + 1;
    let answering = voters.iter().filter(|n| n.light != Light::Red).count();
    let green = voters.iter().filter(|n| n.light == Light::Green).count();
    if !view.readiness.is_ready() {
        return (
            Light::Red,
            format!(
                "NOT READY: node {} cannot commit mail ({})",
                view.this_node,
                view.readiness.reason()
            ),
        );
    }
    if view.leader.is_none() || answering < quorum {
        return (
            Light::Red,
            format!(
                "NO QUORUM: {answering} of {} voters answer, {quorum} needed",
                voters.len()
            ),
        );
    }
    let spare = green.saturating_sub(quorum);
    let survives = match spare {
        0 => "one more failure stops mail acceptance".to_string(),
        1 => "survives the loss of any one node".to_string(),
        n => format!("survives the loss of any {n} nodes"),
    };
    if green == voters.len() {
        (
            Light::Green,
            format!(
                "ALL GREEN: {green} of {} voters in sync; {survives}",
                voters.len()
            ),
        )
    } else {
        (
            Light::Amber,
            format!(
                "DEGRADED: {green} of {} voters in sync, {answering} answering; mail is accepted, \
                 but {survives}",
                voters.len()
            ),
        )
    }
}

/// A number a node reported, or `?` for a node that did not answer.
fn known(n: &NodeRow, value: u64) -> String {
    if n.light == Light::Red {
        "?".to_string()
    } else {
        value.to_string()
    }
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border-bottom:1px solid #ddd;padding:.35em .8em;text-align:left}\
th{background:#f4f4f4}\
.light{display:inline-block;width:.9em;height:.9em;border-radius:50%;margin-right:.4em;vertical-align:middle}\
.light.green{background:#2e9e44}.light.amber{background:#e8a317}.light.red{background:#d0312d}\
.verdict{font-size:1.3em;padding:.6em 1em;border-radius:.3em;display:inline-block}\
.verdict.green{background:#e3f6e7}.verdict.amber{background:#fdf1d8}.verdict.red{background:#fbe1e0}\
.muted{color:#777}";

/// Renders the page.
pub fn render(view: &StatusView) -> String {
    let (light, sentence) = verdict(view);
    let mut h = String::with_capacity(4096);
    // `write!` to a String cannot fail.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>quorum-relay: {}</title><style>{STYLE}</style></head><body>\n",
        light.name()
    );
    let _ = write!(
        h,
        "<h1>quorum-relay tier</h1>\n<p class=\"verdict {l}\" id=\"verdict\" data-light=\"{l}\">\
         <span class=\"light {l}\"></span>{}</p>\n",
        esc(&sentence),
        l = light.name()
    );
    let leader = view
        .leader
        .map_or_else(|| "none".to_string(), |l| format!("node {l}"));
    let _ = writeln!(
        h,
        "<p>Seen from node {} ({}: {}). Leader: {}. Term: {}.</p>",
        view.this_node,
        if view.readiness.is_ready() {
            "ready"
        } else {
            "not ready"
        },
        esc(view.readiness.reason()),
        leader,
        view.term
    );

    h.push_str(
        "<h2>Nodes</h2>\n<table id=\"nodes\"><tr><th>light</th><th>node</th><th>role</th>\
         <th>raft address</th><th>applied</th><th>lag</th><th>lag (s)</th><th>queue</th><th>state</th></tr>\n",
    );
    for n in &view.nodes {
        let _ = writeln!(
            h,
            "<tr id=\"node-{id}\" data-light=\"{l}\"><td><span class=\"light {l}\"></span>{L}</td>\
             <td>node {id}{this}</td><td>{role}{voter}</td><td>{addr}</td><td>{applied}</td>\
             <td>{lag}</td><td class=\"lag-seconds\">{lag_s}</td><td>{queue}</td><td>{note}</td></tr>",
            id = n.id,
            l = n.light.name(),
            L = n.light.name().to_uppercase(),
            this = if n.id == view.this_node {
                " (this node)"
            } else {
                ""
            },
            role = esc(&n.role),
            voter = if n.voter { "" } else { " (learner)" },
            addr = esc(&n.addr),
            applied = known(n, n.applied),
            lag = known(n, n.lag),
            lag_s = n.lag_millis.map_or_else(
                || "?".to_string(),
                |ms| format!("{:.1}", ms as f64 / 1000.0)
            ),
            queue = n
                .queue_total
                .map_or_else(|| "?".to_string(), |q| q.to_string()),
            note = esc(&n.note),
        );
    }
    h.push_str("</table>\n");

    let q = &view.queue;
    let _ = write!(
        h,
        "<h2>Queue</h2>\n<table id=\"queue\"><tr><th>queued</th><th>deferred</th><th>held</th>\
         <th>total</th><th>oldest</th></tr>\n<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td></tr></table>\n",
        q.queued,
        q.deferred,
        q.held,
        q.queued + q.deferred + q.held,
        view.oldest_age_seconds
            .map_or_else(|| "empty".to_string(), |s| format!("{s} s")),
    );

    h.push_str(
        "<h2>Routes</h2>\n<table id=\"routes\"><tr><th>domain</th><th>target</th><th>TLS</th>\
         <th>last result from this node</th></tr>\n",
    );
    if view.routes.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">no routes</td></tr>\n");
    }
    for r in &view.routes {
        for (i, target) in r.route.targets.iter().enumerate() {
            let last = match r.last.get(i).and_then(|l| l.as_ref()) {
                Some(t) => format!(
                    "{} {} s ago: {}",
                    t.result,
                    view.now.0.saturating_sub(t.at.0) / 1000,
                    esc(&t.reply)
                ),
                None => "<span class=\"muted\">none yet</span>".to_string(),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if i == 0 {
                    esc(&r.domain)
                } else {
                    String::new()
                },
                esc(target),
                r.route.tls,
                last
            );
        }
    }
    let _ = write!(
        h,
        "</table>\n<p class=\"muted\">Generated {} by node {}; refreshes every {REFRESH_SECONDS} s. \
         Metrics: <a href=\"/metrics\">/metrics</a>, readiness: <a href=\"/readyz\">/readyz</a>.</p>\n\
         </body></html>\n",
        esc(&view.generated_at),
        view.this_node
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: NodeId, light: Light) -> NodeRow {
        NodeRow {
            id,
            addr: format!("127.0.0.1:710{id}"),
            voter: true,
            role: "follower".into(),
            applied: 10,
            lag: 0,
            lag_millis: Some(0),
            queue_total: Some(0),
            light,
            note: String::new(),
        }
    }

    fn view(lights: &[Light]) -> StatusView {
        StatusView {
            this_node: 1,
            readiness: Readiness::Ready("test".into()),
            leader: Some(1),
            term: 3,
            nodes: lights
                .iter()
                .enumerate()
                .map(|(i, l)| row(i as NodeId + 1, *l))
                .collect(),
            routes: vec![RouteRow {
                domain: "example.test".into(),
                route: Route::new(vec!["127.0.0.1:2600".into()], relay_types::TlsPolicy::None),
                last: vec![None],
            }],
            queue: QueueCounts::default(),
            oldest_age_seconds: None,
            generated_at: "now".into(),
            now: UnixMillis(0),
        }
    }

    #[test]
    fn verdicts() {
        use Light::*;
        assert_eq!(verdict(&view(&[Green, Green, Green])).0, Green);
        assert_eq!(verdict(&view(&[Green, Green, Red])).0, Amber);
        assert_eq!(verdict(&view(&[Green, Amber, Amber])).0, Amber);
        assert_eq!(verdict(&view(&[Green, Red, Red])).0, Red);
        let mut v = view(&[Green, Green, Green]);
        v.readiness = Readiness::NotReady("no quorum".into());
        assert_eq!(verdict(&v).0, Red);
        let mut v = view(&[Green, Green, Green]);
        v.leader = None;
        assert_eq!(verdict(&v).0, Red);
    }

    #[test]
    fn page_has_a_row_per_node_refreshes_and_escapes() {
        let mut v = view(&[Light::Green, Light::Green, Light::Red]);
        v.nodes[2].note = "<script>".into();
        let html = render(&v);
        assert!(html.contains("http-equiv=\"refresh\""));
        assert!(html.contains("id=\"node-3\" data-light=\"red\""));
        assert!(html.contains("id=\"node-1\" data-light=\"green\""));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("DEGRADED"));
        assert!(html.contains("example.test"));
    }
}
