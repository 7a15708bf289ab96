//! A loopback DNS server over UDP answering A, AAAA, MX and TXT queries from a map, with
//! hickory's own message types. Unknown names get NXDOMAIN, known names without the asked
//! type an empty answer, names marked failing SERVFAIL, and names marked silent no answer at
//! all. Records every question it is asked.

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The names the server knows.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    records: HashMap<String, Vec<RData>>,
    servfail: HashSet<String>,
    silent: HashSet<String>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name(s: &str) -> Name {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).unwrap()
}

impl Zone {
    /// An empty zone.
    pub fn new() -> Zone {
        Zone::default()
    }

    fn add(mut self, owner: &str, rdata: RData) -> Zone {
        self.records.entry(key(owner)).or_default().push(rdata);
        self
    }

    /// An MX record.
    pub fn mx(self, domain: &str, preference: u16, exchange: &str) -> Zone {
        self.add(domain, RData::MX(MX::new(preference, name(exchange))))
    }

    /// A null MX (RFC 7505): `0 .`.
    pub fn null_mx(self, domain: &str) -> Zone {
        self.add(domain, RData::MX(MX::new(0, Name::root())))
    }

    /// An A record.
    pub fn a(self, host: &str, ip: Ipv4Addr) -> Zone {
        self.add(host, RData::A(A(ip)))
    }

    /// An AAAA record.
    pub fn aaaa(self, host: &str, ip: Ipv6Addr) -> Zone {
        self.add(host, RData::AAAA(AAAA(ip)))
    }

    /// A TXT record (SPF, a DKIM key, DMARC), split into strings of at most 255 octets as
    /// DNS needs.
    pub fn txt(self, owner: &str, text: &str) -> Zone {
        let parts: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        self.add(owner, RData::TXT(TXT::new(parts)))
    }

    /// Queries for `name` are never answered (a server that drops them).
    pub fn silent(mut self, host: &str) -> Zone {
        self.silent.insert(key(host));
        self
    }

    /// Every query for `name` gets SERVFAIL.
    pub fn servfail(mut self, host: &str) -> Zone {
        self.servfail.insert(key(host));
        self
    }

    fn answer(&self, request: &Message) -> Message {
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(true)
            .set_authoritative(true);
        let Some(query) = request.queries().first() else {
            response.set_response_code(ResponseCode::FormErr);
            return response;
        };
        response.add_query(query.clone());
        let k = key(&query.name().to_ascii());
        if self.servfail.contains(&k) {
            response.set_response_code(ResponseCode::ServFail);
            return response;
        }
        match self.records.get(&k) {
            None => {
                response.set_response_code(ResponseCode::NXDomain);
            }
            Some(rdatas) => {
                for rdata in rdatas
                    .iter()
                    .filter(|r| r.record_type() == query.query_type())
                {
                    response.add_answer(Record::from_rdata(
                        query.name().clone(),
                        60,
                        rdata.clone(),
                    ));
                }
                response.set_response_code(ResponseCode::NoError);
            }
        }
        response
    }
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Starts serving `zone` on 127.0.0.1, on a free port.
    pub async fn start(zone: Zone) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let seen = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(q) = request.queries().first() {
                    let name = key(&q.name().to_ascii());
                    seen.lock().unwrap().push((name.clone(), q.query_type()));
                    if zone.silent.contains(&name) {
                        continue;
                    }
                }
                let response = zone.answer(&request);
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            queries,
            task,
        }
    }

    /// The questions asked so far: (name without trailing dot, lowercase; type).
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
