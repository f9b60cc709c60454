//! The gRPC part of an AppendEntries round trip between two nodes: the
//! leader side encodes an openraft `AppendEntriesRequest` with bincode into
//! a `RaftPayload` (as `relay-cluster`'s network does), tonic carries it
//! over loopback HTTP/2, the follower side decodes it and answers an
//! encoded `Ok(Success)`, which the leader decodes. The follower's Raft and
//! its fsync are left out (the `log_append` bench has the fsync), so this
//! isolates serialisation and transport.
//!
//! `cargo bench -p relay-benches --bench grpc_append`

use std::cell::Cell;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use openraft::Vote;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use relay_proto::raft::{
    FetchBodyReply, FetchBodyRequest, LeadershipReply, LeadershipRequest, MembershipChange,
    MembershipChangeReply, NodeStatusReply, NodeStatusRequest, ProbeReply, ProbeRequest,
    RaftPayload, SubmitReply, SubmitRequest,
};
use relay_store::TypeConfig;
use relay_types::{decode, encode};
use tonic::{Request, Response, Status};

mod common;

type Reply = Result<AppendEntriesResponse<u64>, RaftError<u64>>;

/// A follower that decodes AppendEntries and accepts them without storing.
#[derive(Debug)]
struct Follower;

#[tonic::async_trait]
impl RaftService for Follower {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.into_inner().data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        std::hint::black_box(&rpc);
        let reply: Reply = Ok(AppendEntriesResponse::Success);
        Ok(Response::new(RaftPayload {
            data: encode(&reply),
            ..Default::default()
        }))
    }
    async fn vote(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn install_snapshot(
        &self,
        _: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn submit(&self, _: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn node_status(
        &self,
        _: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusReply>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn leadership(
        &self,
        _: Request<LeadershipRequest>,
    ) -> Result<Response<LeadershipReply>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn change_membership(
        &self,
        _: Request<MembershipChange>,
    ) -> Result<Response<MembershipChangeReply>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn probe_targets(
        &self,
        _: Request<ProbeRequest>,
    ) -> Result<Response<ProbeReply>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn fetch_body(
        &self,
        _: Request<FetchBodyRequest>,
    ) -> Result<Response<FetchBodyReply>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(RaftServiceServer::new(Follower).max_decoding_message_size(64 << 20))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        RaftServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    });
    let next = Cell::new(1u64);
    let mut group = c.benchmark_group("grpc_append_round_trip");
    for (entries, size) in [(0u64, 0), (1, 1024), (16, 1024), (64, 1024), (1, 32 * 1024)] {
        let body = common::body(size);
        let name = if entries == 0 {
            "heartbeat".to_string()
        } else {
            format!("{entries}x{}k", size / 1024)
        };
        group.throughput(Throughput::Elements(entries.max(1)));
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let first = next.get();
                    next.set(first + entries);
                    AppendEntriesRequest::<TypeConfig> {
                        vote: Vote::new_committed(1, 1),
                        prev_log_id: Some(openraft::testing::log_id(1, 1, first - 1)),
                        leader_commit: Some(openraft::testing::log_id(1, 1, first - 1)),
                        entries: common::enqueue_entries(first, entries, &body),
                    }
                },
                |rpc| {
                    rt.block_on(async {
                        let reply = client
                            .append_entries(RaftPayload {
                                data: encode(&rpc),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        let reply: Reply = decode(&reply.into_inner().data).unwrap();
                        assert!(matches!(reply, Ok(AppendEntriesResponse::Success)));
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = round_trip
}
criterion_main!(benches);
