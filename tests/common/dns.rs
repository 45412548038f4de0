//! A DNS server for tests: hickory-server serving one zone from memory over
//! real UDP on 127.0.0.1, authoritative for one name whose A records the
//! test changes while it runs. Other questions get hickory-server's own
//! answers (no data, or not in the zone).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::sync::oneshot;

/// The server; stops when dropped.
pub struct Dns {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    name: Name,
    ttl: u32,
    /// Dropping it stops the server's thread.
    _stop: oneshot::Sender<()>,
}

impl Dns {
    /// Serves `name` (e.g. `replicas.test`) as `records`, each with `ttl`.
    pub fn start(name: &str, records: &[Ipv4Addr], ttl: u32) -> Dns {
        let name = Name::from_ascii(format!("{name}.")).unwrap();
        let zone = Arc::new(zone(&name, records, ttl));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&name), vec![zone.clone()]);
        let (stop, stopped) = oneshot::channel();
        // Its own runtime: the tests drive theirs with `block_on` and change
        // records from inside it.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut server = Server::new(catalog);
                server.register_socket(tokio::net::UdpSocket::from_std(socket).unwrap());
                let _ = stopped.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        Dns {
            addr,
            zone,
            name,
            ttl,
            _stop: stop,
        }
    }

    /// Answers with `records` from now on: one swap of the whole record set,
    /// so no answer holds half of the old list and half of the new.
    pub fn set(&self, records: &[Ipv4Addr]) {
        let key = RrKey::new(LowerName::new(&self.name), RecordType::A);
        let set = a_records(&self.name, records, self.ttl);
        // The zone's lock is runtime-agnostic, so this may run on a test's
        // runtime thread.
        futures::executor::block_on(async {
            let mut zone = self.zone.records_mut().await;
            match set {
                Some(set) => zone.insert(key, Arc::new(set)),
                None => zone.remove(&key),
            };
        });
    }
}

/// A zone whose apex is `name`: its SOA (negative answers cached for `ttl`)
/// and `records`.
fn zone(name: &Name, records: &[Ipv4Addr], ttl: u32) -> InMemoryZoneHandler {
    let soa = SOA::new(
        Name::from_ascii("ns.test.").unwrap(),
        Name::from_ascii("hostmaster.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        ttl,
    );
    let mut soa_set = RecordSet::with_ttl(name.clone(), RecordType::SOA, ttl);
    soa_set.add_rdata(RData::SOA(soa));
    let mut sets = BTreeMap::from([(RrKey::new(name.into(), RecordType::SOA), soa_set)]);
    if let Some(set) = a_records(name, records, ttl) {
        sets.insert(RrKey::new(name.into(), RecordType::A), set);
    }
    InMemoryZoneHandler::new(name.clone(), sets, ZoneType::Primary, AxfrPolicy::Deny).unwrap()
}

/// `records` as the A record set of `name`, or `None` for no records.
fn a_records(name: &Name, records: &[Ipv4Addr], ttl: u32) -> Option<RecordSet> {
    let mut set = RecordSet::with_ttl(name.clone(), RecordType::A, ttl);
    for ip in records {
        set.add_rdata(RData::A(A(*ip)));
    }
    (!set.is_empty()).then_some(set)
}
