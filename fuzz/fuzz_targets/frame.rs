//! The framing scanner (`arrpc_wire::frame`) on arbitrary bytes, arriving
//! in arbitrary chunks.
//!
//! Checked: no panic; walking the bytes in pieces finds what walking them
//! at once finds; a value it calls whole is exactly what a MessagePack
//! decoder reads; one byte less of limit refuses it; and the bytes after a
//! value frame the same with the same scanner as with a new one.

#![no_main]

use arrpc_wire::frame::{FrameError, Scanner};
use libfuzzer_sys::fuzz_target;

/// Far above libFuzzer's input sizes: only length fields can exceed it.
const LIMIT: usize = 1 << 20;

fuzz_target!(|input: &[u8]| {
    // The first byte sets the size of the pieces the rest arrives in.
    let Some((&step, data)) = input.split_first() else {
        return;
    };
    let step = usize::from(step % 16) + 1;
    let whole = Scanner::new(LIMIT).scan(data);

    let mut scanner = Scanner::new(LIMIT);
    let mut seen = 0;
    let pieces = loop {
        seen = (seen + step).min(data.len());
        match scanner.scan(&data[..seen]) {
            Ok(None) if seen < data.len() => continue,
            other => break other,
        }
    };
    assert_eq!(pieces, whole, "in pieces of {step}");

    let Ok(Some(len)) = whole else {
        return;
    };
    assert!(len > 0 && len <= data.len());
    let mut value = &data[..len];
    rmpv::decode::read_value(&mut value).expect("a whole value decodes");
    assert!(value.is_empty(), "the decoder read less than the scanner");
    assert_eq!(
        Scanner::new(len - 1).scan(data),
        Err(FrameError::TooLarge { limit: len - 1 })
    );
    // The scanner starts over after a value: the rest frames as if new.
    assert_eq!(
        scanner.scan(&data[len..]),
        Scanner::new(LIMIT).scan(&data[len..])
    );
});
