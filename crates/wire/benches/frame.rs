//! Nanoseconds per call of the framing scanner and of MessagePack-RPC
//! parsing on the messages `arrpc-bench` sends the Python and JavaScript
//! examples: 1,000 integers (3,003 bytes of uint 16s) and a nested record
//! (a map of 20 keys, 1,008 bytes). Prints one JSON line per case.
//!
//! Run: `cargo bench -p arrpc-wire --bench frame`. Each figure is the best
//! of several rounds, so a busy neighbour core inflates it less.

use std::hint::black_box;

use arrpc_wire::frame::Scanner;
use arrpc_wire::rpc;

#[path = "support/timing.rs"]
mod timing;

use timing::{messages, ns_per_call, report};

fn main() {
    for (message, packed) in messages() {
        let packed = &packed[..];
        let ns = ns_per_call(|| Scanner::new(1 << 20).scan(black_box(packed)));
        report("Scanner::scan", message, packed.len(), ns);
        let request = rpc::request(7, "echo", packed);
        let ns = ns_per_call(|| rpc::parse(black_box(&request)).is_some());
        report("rpc::parse", message, request.len(), ns);
        let ns = ns_per_call(|| rpc::parse_whole(black_box(&request)).is_some());
        report("rpc::parse_whole", message, request.len(), ns);
    }
}
