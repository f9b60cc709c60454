//! Measures commit latency of a small entry on a running cluster: sends
//! `count` sequential `SetRoute` entries through a node's Submit RPC (the
//! follower→leader write path) and prints median, p90, p99 and max.
//!
//! Example, against the local cluster:
//! `commit-latency --addr 127.0.0.1:7101 --count 2000`

use std::time::{Duration, Instant};

use clap::Parser;
use relay_proto::raft::SubmitRequest;
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_types::{Command, Route, TlsPolicy};

#[derive(Debug, Parser)]
struct Args {
    /// Raft gRPC address of the node to submit to.
    #[arg(long, default_value = "127.0.0.1:7101")]
    addr: String,
    /// Entries to commit, one after another.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// The cluster's `cluster.secret` (the local development cluster's by
    /// default).
    #[arg(
        long,
        env = "QR_CLUSTER_SECRET",
        default_value = "dev-cluster-secret-change-me"
    )]
    secret: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", args.secret).parse()?;
    let mut client =
        RaftServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
    let mut samples = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let command = Command::SetRoute {
            domain: format!("bench-{}.test", i % 16),
            route: Route::new(vec!["127.0.0.1:9".into()], TlsPolicy::None),
        };
        let start = Instant::now();
        client
            .submit(SubmitRequest {
                command: relay_types::encode(&command),
            })
            .await?;
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "commit latency over {} entries via {}: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        args.addr,
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99)),
        ms(*samples.last().unwrap())
    );
    Ok(())
}
