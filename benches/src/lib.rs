//! Benchmarks for quorum-relay. Figures are goals measured against a baseline
//! in the same run (Postfix via benches/postfix-relay.sh), never timed assertions.
//!
//! The commit-latency tool lives in `src/bin/commit-latency.rs`.
