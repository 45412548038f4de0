//! Nanoseconds per call of each transcoder on the messages `arrpc-bench`
//! sends the Python and JavaScript examples: 1,000 integers (3,003 bytes
//! of uint 16s) and a nested record (a map of 20 keys, 1,008 bytes). The
//! reverse directions read what the forward ones wrote, and
//! `msgpack_to_numbers` (JavaScript's route for an array of numbers) reads
//! the array. Prints one JSON line per case.
//!
//! Run: `cargo bench -p arrpc-codec --bench transcode`. Each figure is the
//! best of several rounds, so a busy neighbour core inflates it less.

use std::hint::black_box;

#[path = "../../wire/benches/support/timing.rs"]
mod timing;

use timing::{messages, ns_per_call, report};

fn main() {
    for (message, packed) in messages() {
        let packed = &packed[..];
        let marshal = arrpc_codec::msgpack_to_marshal(packed).unwrap().unwrap();
        let json = arrpc_codec::msgpack_to_json(packed).unwrap().unwrap();
        let ns = ns_per_call(|| arrpc_codec::msgpack_to_marshal(black_box(packed)));
        report("msgpack_to_marshal", message, packed.len(), ns);
        let ns = ns_per_call(|| arrpc_codec::msgpack_to_json(black_box(packed)));
        report("msgpack_to_json", message, packed.len(), ns);
        let ns = ns_per_call(|| arrpc_codec::marshal_to_msgpack(black_box(&marshal)));
        report("marshal_to_msgpack", message, marshal.len(), ns);
        let ns = ns_per_call(|| arrpc_codec::json_to_msgpack(black_box(&json)));
        report("json_to_msgpack", message, json.len(), ns);
        let ns = ns_per_call(|| arrpc_codec::msgpack_to_numbers(black_box(packed)));
        report("msgpack_to_numbers", message, packed.len(), ns);
    }
}
