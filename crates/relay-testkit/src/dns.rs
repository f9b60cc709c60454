//! [`TestDns`]: a small authoritative DNS server on loopback UDP whose
//! answers each test sets at runtime: MX, A/AAAA, a null MX, NXDOMAIN for
//! every name it does not know, and SERVFAIL for a name on demand.
//!
//! Hand-written over `hickory-proto`'s message codec rather than built on
//! `hickory-server`: the resolver under test already compiles the codec,
//! while the server crate brings a zone-file authority, its own request
//! pipeline and configuration for what is here a map lookup per query;
//! and "answer SERVFAIL now, the real records later" is one flag here
//! instead of a custom authority there. UDP only: the answers are small
//! enough never to be truncated, so a resolver never needs TCP.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::TestkitError;

/// What the server knows about one name.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// `(preference, exchange)`; exchange `.` for a null MX.
    mx: Vec<(u16, String)>,
    addresses: Vec<IpAddr>,
    /// Answer every query for this name with SERVFAIL.
    servfail: bool,
}

#[derive(Debug, Default)]
struct Zone {
    names: HashMap<String, Entry>,
    /// Queries received per lower-case name (without the trailing dot).
    queries: HashMap<String, usize>,
    ttl: u32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An authoritative DNS server for tests on `127.0.0.1:<free port>`, UDP.
/// Unknown names get NXDOMAIN; a known name without records of the type
/// asked gets an empty NOERROR answer (NODATA); both carry an SOA whose
/// minimum is the record TTL. Stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: JoinHandle<()>,
}

impl fmt::Debug for TestDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDns")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    /// Starts a server with no names (everything is NXDOMAIN) and a record
    /// TTL of 60 s.
    pub async fn start() -> Result<TestDns, TestkitError> {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind = |source| TestkitError::Bind {
            addr: listen,
            source,
        };
        let socket = UdpSocket::bind(listen).await.map_err(bind)?;
        let addr = socket.local_addr().map_err(bind)?;
        let zone = Arc::new(Mutex::new(Zone {
            ttl: 60,
            ..Zone::default()
        }));
        let task = tokio::spawn(serve(socket, zone.clone()));
        Ok(TestDns { addr, zone, task })
    }

    /// The server's address (`127.0.0.1:port`), for a resolver's list.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TTL of every record served from now on.
    pub fn set_ttl(&self, seconds: u32) {
        lock(&self.zone).ttl = seconds;
    }

    /// `domain`'s MX records, `(preference, exchange)`; replaces earlier
    /// ones.
    pub fn set_mx(&self, domain: &str, records: &[(u16, &str)]) {
        let mut zone = lock(&self.zone);
        let entry = zone.names.entry(key(domain)).or_default();
        entry.mx = records.iter().map(|(p, e)| (*p, key(e))).collect();
    }

    /// `domain` publishes a null MX (RFC 7505: `0 .`).
    pub fn set_null_mx(&self, domain: &str) {
        let mut zone = lock(&self.zone);
        let entry = zone.names.entry(key(domain)).or_default();
        entry.mx = vec![(0, ".".into())];
    }

    /// `host`'s A and AAAA records (by address family); replaces earlier
    /// ones.
    pub fn set_addresses(&self, host: &str, addresses: &[IpAddr]) {
        let mut zone = lock(&self.zone);
        zone.names.entry(key(host)).or_default().addresses = addresses.to_vec();
    }

    /// While `on`, every query for `name` is answered with SERVFAIL (the
    /// records set for it are kept and served again afterwards).
    pub fn set_servfail(&self, name: &str, on: bool) {
        let mut zone = lock(&self.zone);
        zone.names.entry(key(name)).or_default().servfail = on;
    }

    /// Forgets `name`: it is NXDOMAIN from now on.
    pub fn remove(&self, name: &str) {
        lock(&self.zone).names.remove(&key(name));
    }

    /// Queries received for `name` so far, any type.
    pub fn queries(&self, name: &str) -> usize {
        lock(&self.zone)
            .queries
            .get(&key(name))
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&zone, &buf[..n]) {
            // A lost reply is what UDP does anyway: the resolver retries.
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// The reply to one request, `None` for something that is not a query.
fn answer(zone: &Mutex<Zone>, request: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(request).ok()?;
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    if let Some(edns) = &request.edns {
        reply.set_edns(edns.clone());
    }
    let Some(query) = request.queries.first().cloned() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply.to_vec().ok();
    };
    reply.add_query(query.clone());
    let qname = query.name().clone();
    let name = key(&qname.to_ascii());
    let mut zone = lock(zone);
    *zone.queries.entry(name.clone()).or_default() += 1;
    let ttl = zone.ttl;
    let soa = || {
        let apex = Name::from_ascii("test.").unwrap_or_else(|_| Name::root());
        let mname = Name::from_ascii("ns.test.").unwrap_or_else(|_| Name::root());
        let rname = Name::from_ascii("hostmaster.test.").unwrap_or_else(|_| Name::root());
        Record::from_rdata(
            apex,
            ttl,
            RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86_400, ttl)),
        )
    };
    match zone.names.get(&name) {
        None => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.add_authority(soa());
        }
        Some(entry) if entry.servfail => reply.metadata.response_code = ResponseCode::ServFail,
        Some(entry) => {
            let mut answers = Vec::new();
            match query.query_type() {
                RecordType::MX => {
                    for (preference, exchange) in &entry.mx {
                        let exchange = if exchange == "." {
                            Name::root()
                        } else {
                            Name::from_ascii(format!("{exchange}.")).ok()?
                        };
                        answers.push(RData::MX(MX::new(*preference, exchange)));
                    }
                }
                RecordType::A => answers.extend(entry.addresses.iter().filter_map(|a| match a {
                    IpAddr::V4(v4) => Some(RData::A(A(*v4))),
                    IpAddr::V6(_) => None,
                })),
                RecordType::AAAA => {
                    answers.extend(entry.addresses.iter().filter_map(|a| match a {
                        IpAddr::V6(v6) => Some(RData::AAAA(AAAA(*v6))),
                        IpAddr::V4(_) => None,
                    }))
                }
                _ => {}
            }
            if answers.is_empty() {
                reply.add_authority(soa());
            }
            for data in answers {
                reply.add_answer(Record::from_rdata(qname.clone(), ttl, data));
            }
        }
    }
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn ask(zone: &Mutex<Zone>, name: &str, kind: RecordType) -> Message {
        let mut request = Message::query();
        request.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        Message::from_vec(&answer(zone, &request.to_vec().unwrap()).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn answers_follow_what_the_test_set() {
        let dns = TestDns::start().await.unwrap();
        dns.set_mx(
            "Example.test",
            &[(10, "mx1.example.test"), (20, "mx2.example.test")],
        );
        dns.set_addresses("mx1.example.test", &["127.0.0.2".parse().unwrap()]);
        dns.set_null_mx("null.test");
        let zone = &dns.zone;

        let mx = ask(zone, "example.test.", RecordType::MX);
        assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
        assert_eq!(mx.answers.len(), 2);
        let a = ask(zone, "mx1.example.test.", RecordType::A);
        assert_eq!(a.answers.len(), 1);
        let aaaa = ask(zone, "mx1.example.test.", RecordType::AAAA);
        assert!(aaaa.answers.is_empty(), "NODATA");
        assert_eq!(aaaa.authorities.len(), 1, "with an SOA");
        let null = ask(zone, "null.test.", RecordType::MX);
        assert!(matches!(&null.answers[0].data, RData::MX(mx) if mx.exchange.is_root()));
        let gone = ask(zone, "nowhere.test.", RecordType::MX);
        assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);

        dns.set_servfail("example.test", true);
        let failing = ask(zone, "example.test.", RecordType::MX);
        assert_eq!(failing.metadata.response_code, ResponseCode::ServFail);
        dns.set_servfail("example.test", false);
        assert_eq!(ask(zone, "example.test.", RecordType::MX).answers.len(), 2);
        assert_eq!(dns.queries("EXAMPLE.test."), 3);
    }
}
