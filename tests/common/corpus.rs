//! MessagePack values of every kind and edge, generated deterministically,
//! and [`check`], which hands lines to a reference program: what the host's
//! transcoders (tests/codec.rs) and the Python example's decoder
//! (tests/languages.rs) are checked against the real libraries with.

use std::io::Write;
use std::process::{Command, Stdio};

use rmpv::Value;

/// A small deterministic generator, so a failure names a value that comes
/// back on the next run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Integers at every encoding's edges, and the JavaScript safe range's.
const EDGES: [i128; 22] = [
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    (1 << 53) - 1,
    1 << 53,
    (1 << 63) - 1,
    u64::MAX as i128,
    -1,
    -32,
    -33,
    -129,
    -(1 << 53) + 1,
    i64::MIN as i128,
];

pub fn scalar(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Nil,
        1 => Value::Boolean(rng.below(2) == 1),
        2 | 3 => {
            let n = EDGES[rng.below(EDGES.len() as u64) as usize];
            if n >= 0 {
                Value::from(n as u64)
            } else {
                Value::from(n as i64)
            }
        }
        4 => Value::from(rng.next() as i64 >> rng.below(64)),
        5 => Value::F64(
            [
                0.5,
                -0.0,
                1e300,
                5e-324,
                f64::NAN,
                f64::INFINITY,
                0.1,
                -2.0,
                1e21,
            ][rng.below(9) as usize],
        ),
        6 => Value::F32([1.5f32, -0.0, f32::NAN, 3.4e38, 0.1][rng.below(5) as usize]),
        7 => Value::from(
            [
                "",
                "a",
                "__proto__",
                "numbers",
                "é",
                "😀",
                "q\"\\\n\u{1}",
                "k1",
            ][rng.below(8) as usize],
        ),
        8 => Value::from("x".repeat(rng.below(300) as usize)),
        9 => Value::Binary((0..rng.below(40)).map(|i| i as u8).collect()),
        10 => Value::Ext(
            [5, -1, 0][rng.below(3) as usize] as i8,
            vec![0; [1, 4, 8, 3][rng.below(4) as usize]],
        ),
        _ => Value::from(rng.next() as f64 / 7.0),
    }
}

pub fn value(rng: &mut Rng, depth: u32) -> Value {
    if depth > 3 || rng.below(3) == 0 {
        return scalar(rng);
    }
    let len = rng.below(6);
    if rng.below(2) == 0 {
        Value::Array((0..len).map(|_| value(rng, depth + 1)).collect())
    } else {
        let key = |rng: &mut Rng| match rng.below(10) {
            0..=5 => Value::from(format!("k{}", rng.below(4))),
            6 => Value::Array(vec![]),
            _ => scalar(rng),
        };
        Value::Map(
            (0..len)
                .map(|_| (key(rng), value(rng, depth + 1)))
                .collect(),
        )
    }
}

/// The corpus: generated values, plus malformed UTF-8, as MessagePack.
pub fn corpus() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut corpus: Vec<Vec<u8>> = (0..3000)
        .map(|_| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &value(&mut rng, 0)).unwrap();
            out
        })
        .collect();
    corpus.push(vec![0xa2, 0xff, 0xfe]);
    corpus.push(vec![0x81, 0xa1, 0xff, 0x01]);
    corpus
}

/// Runs `program` with `lines` on stdin and returns its stdout's lines,
/// failing the test on any `FAIL` line or a bad exit.
pub fn check(program: &mut Command, lines: &[String]) -> Vec<String> {
    let mut child = program
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the checker");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "the checker failed");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    stdout.lines().map(str::to_owned).collect()
}
