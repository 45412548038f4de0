//! Timing for the wire and codec crates' benches: the two messages packed,
//! nanoseconds per call, and one JSON line per case.

use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "messages.rs"]
mod messages;

/// `arrpc-bench`'s two messages, packed, with their names.
pub fn messages() -> [(&'static str, Vec<u8>); 2] {
    [
        ("ints", messages::pack(&messages::ints())),
        ("record", messages::pack(&messages::record())),
    ]
}

/// Best nanoseconds per call of `f` over rounds of about 50 ms.
pub fn ns_per_call<T>(mut f: impl FnMut() -> T) -> f64 {
    let mut calls = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..calls {
            black_box(f());
        }
        if start.elapsed() > Duration::from_millis(50) {
            break;
        }
        calls *= 2;
    }
    (0..10)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

pub fn report(function: &str, message: &str, bytes: usize, ns: f64) {
    println!(
        r#"{{"function":"{function}","message":"{message}","input_bytes":{bytes},"ns_per_call":{ns:.0}}}"#
    );
}
