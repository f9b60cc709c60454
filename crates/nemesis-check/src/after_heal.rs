//! The state after the last heal: the queue drained, every replica equal,
//! no body left anywhere, the Raft log purged past every body.

use crate::records::AfterHeal;

/// One failed post-heal condition, in words.
pub fn problems(after: &AfterHeal) -> Vec<String> {
    let mut out = after.problems.clone();
    if !after.drained {
        out.push("the queue did not drain on every node".into());
    }
    if after.nodes.is_empty() {
        out.push("no node was observed after the heal".into());
    }
    for n in &after.nodes {
        let queue = n.queued + n.deferred + n.held;
        if queue > 0 {
            out.push(format!(
                "node {}: {queue} message(s) still queued ({} queued, {} deferred, {} held)",
                n.id, n.queued, n.deferred, n.held
            ));
        }
        if n.stored_bodies > 0 {
            out.push(format!("node {}: {} body(ies) left", n.id, n.stored_bodies));
        }
        if n.purged_index < after.drained_index {
            out.push(format!(
                "node {}: log purged to {} only, bodies may remain up to {}",
                n.id, n.purged_index, after.drained_index
            ));
        }
    }
    if let Some(first) = after.nodes.first() {
        for n in &after.nodes[1..] {
            if n.digest_index != first.digest_index {
                out.push(format!(
                    "nodes {} and {} stopped at different applied indexes ({} vs {})",
                    first.id, n.id, first.digest_index, n.digest_index
                ));
            } else if n.state_checksum != first.state_checksum {
                out.push(format!(
                    "nodes {} and {} differ at index {}: checksum {} vs {}",
                    first.id, n.id, n.digest_index, first.state_checksum, n.state_checksum
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::NodeEnd;

    fn node(id: u64, checksum: &str) -> NodeEnd {
        NodeEnd {
            id,
            digest_index: 100,
            state_checksum: checksum.into(),
            purged_index: 90,
            ..NodeEnd::default()
        }
    }

    #[test]
    fn a_clean_end_has_no_problems_and_each_defect_is_named() {
        let mut after = AfterHeal {
            drained: true,
            drained_index: 90,
            nodes: vec![node(1, "aa"), node(2, "aa"), node(3, "aa")],
            ..AfterHeal::default()
        };
        assert!(problems(&after).is_empty());
        after.nodes[2].state_checksum = "bb".into();
        after.nodes[1].stored_bodies = 1;
        after.nodes[0].purged_index = 10;
        let p = problems(&after).join("\n");
        assert!(p.contains("node 2: 1 body"), "{p}");
        assert!(p.contains("nodes 1 and 3 differ"), "{p}");
        assert!(p.contains("node 1: log purged to 10"), "{p}");
    }
}
