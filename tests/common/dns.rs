//! A DNS server for tests: answers A queries for one name from a list the
//! test changes while it runs, over real UDP on 127.0.0.1 (messages encoded
//! by hickory-proto). Every other question gets an empty answer.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The server; stops when dropped.
pub struct Dns {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Ipv4Addr>>>,
    stop: Arc<AtomicBool>,
}

impl Dns {
    /// Serves `name` (e.g. `replicas.test`) as `records`, each with `ttl`.
    pub fn start(name: &str, records: &[Ipv4Addr], ttl: u32) -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let name = Name::from_ascii(format!("{name}.")).unwrap();
        let shared = Arc::new(Mutex::new(records.to_vec()));
        let stop = Arc::new(AtomicBool::new(false));
        let (served, stopped) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buffer[..len]) else {
                    continue;
                };
                let answer = answer(&query, &name, &served.lock().unwrap(), ttl);
                let _ = socket.send_to(&answer.to_vec().unwrap(), peer);
            }
        });
        Dns {
            addr,
            records: shared,
            stop,
        }
    }

    /// Answers with `records` from now on.
    pub fn set(&self, records: &[Ipv4Addr]) {
        *self.records.lock().unwrap() = records.to_vec();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(query: &Message, name: &Name, records: &[Ipv4Addr], ttl: u32) -> Message {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.metadata.response_code = ResponseCode::NoError;
    for question in &query.queries {
        response.add_query(question.clone());
        if question.query_type() == RecordType::A && question.name() == name {
            for ip in records {
                response.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))));
            }
        }
    }
    response
}
