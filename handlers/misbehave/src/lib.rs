//! `misbehave`: does on request what a faulty or hostile handler might do.
//!
//! The host's tests send it commands to check that the sandbox holds: a trap,
//! an endless loop or unbounded allocation ends only that call, bad output is
//! caught, files and environment variables stay out of reach, and output is
//! captured and tagged with the request, and (`count`) whether an instance
//! was reused and (`grow`) whether one grown large is kept. `sleep` and
//! `wait-file` hold a call open, saying on stdout when they begin, so tests
//! can synchronise on that line.
//!
//! The payload is a MessagePack string, `"<command>"` or `"<command>:<n>"`,
//! or an array holding just that string (MessagePack-RPC params). Any other
//! payload, or an unknown command, is echoed back unchanged.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rmpv::Value;
use serde::Serialize;

/// Bindings for the `handler` world. The export glue takes one argument per
/// flattened field of `context` and `payload`, more than clippy's default.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ world: "handler", path: "../../wit", generate_all });
}

use bindings::arrpc::handler::client;
use bindings::{Context, Guest};

type Reply = Result<Vec<u8>, String>;

struct Misbehave;

impl Guest for Misbehave {
    fn handle(ctx: Context, payload: Vec<u8>) -> Reply {
        let text = match rmpv::decode::read_value(&mut payload.as_slice()) {
            Ok(Value::String(text)) => text,
            // MessagePack-RPC clients send params as an array: `["loop"]`.
            Ok(Value::Array(mut items)) if matches!(items.as_slice(), [Value::String(_)]) => {
                let Some(Value::String(text)) = items.pop() else {
                    return Ok(payload);
                };
                text
            }
            _ => return Ok(payload),
        };
        let Some(text) = text.as_str() else {
            return Ok(payload);
        };
        let (command, arg) = match text.split_once(':') {
            Some((command, arg)) => (command, Some(arg)),
            None => (text, None),
        };
        match command {
            "trap" => trap(),
            "error" => Err("misbehave: asked to fail".into()),
            "invalid-output" => Ok(vec![0xc1]),
            "two-values" => Ok(vec![0x01, 0x02]),
            "truncated-output" => truncated_output(),
            "loop" => spin(),
            "alloc" => alloc(),
            "grow" => grow(count(command, arg)?),
            "read-file" => read_file(arg.unwrap_or("/etc/hostname")),
            "write-file" => write_file(arg.unwrap_or("/etc/hostname")),
            "remove-file" => remove_file(arg.unwrap_or("/etc/hostname")),
            "env" => env(),
            "print" => print(count(command, arg)?),
            "context" => context(&ctx),
            "count" => messages_seen(),
            "sleep" => sleep(count(command, arg)?),
            "wait-file" => wait_file(arg.unwrap_or("/gate/open")),
            _ => Ok(payload),
        }
    }
}

bindings::export!(Misbehave with_types_in bindings);

/// Reads the number after the colon, as in `print:3`.
fn count(command: &str, arg: Option<&str>) -> Result<u64, String> {
    arg.and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("misbehave: {command} needs a count, e.g. \"{command}:3\""))
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Reply {
    rmp_serde::to_vec_named(value).map_err(|e| format!("misbehave: cannot encode the reply: {e}"))
}

/// A panic aborts the guest with a trap; the host must turn it into an error
/// for this call only.
fn trap() -> Reply {
    panic!("misbehave: asked to trap")
}

/// A str8 header promising 10 bytes, followed by only 2.
fn truncated_output() -> Reply {
    Ok(vec![0xd9, 10, b'h', b'i'])
}

/// Never returns and, once it has said so on stdout, never calls the host,
/// so only the host's deadline (fuel or epoch interruption) can stop it.
fn spin() -> Reply {
    say("spinning")?;
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Grows memory 1 MiB at a time until the host's memory limit stops it.
/// Every page is written so that none of it stays untouched.
fn alloc() -> Reply {
    const CHUNK: usize = 1 << 20;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        kept.push(black_box(chunk));
    }
}

/// Grows linear memory by `mib` MiB and keeps it for the instance's life,
/// as a garbage-collected runtime's heap grows message after message.
fn grow(mib: u64) -> Reply {
    static KEPT: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    let mut block = vec![0u8; (mib as usize) << 20];
    for byte in block.iter_mut().step_by(4096) {
        *byte = 1;
    }
    KEPT.lock()
        .map_err(|_| "misbehave: grow: poisoned".to_string())?
        .push(black_box(block));
    encode(&mib)
}

/// Reads a file (`/etc/hostname` unless `read-file:<path>` names one); a
/// path outside the directories granted to the guest fails, and the error
/// says why.
fn read_file(path: &str) -> Reply {
    match std::fs::read_to_string(path) {
        Ok(contents) => encode(&contents),
        Err(e) => Err(format!("misbehave: read-file failed: {e}")),
    }
}

/// Writes `written by misbehave` to a file, as `read_file` names it; fails
/// unless the file is in a directory granted writable.
fn write_file(path: &str) -> Reply {
    match std::fs::write(path, "written by misbehave") {
        Ok(()) => encode(path),
        Err(e) => Err(format!("misbehave: write-file failed: {e}")),
    }
}

/// Deletes a file, as `read_file` names it; fails unless the file is in a
/// directory granted writable.
fn remove_file(path: &str) -> Reply {
    match std::fs::remove_file(path) {
        Ok(()) => encode(path),
        Err(e) => Err(format!("misbehave: remove-file failed: {e}")),
    }
}

/// Every environment variable the guest can see; the host should pass none
/// of its own.
fn env() -> Reply {
    let vars: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
        .collect();
    encode(&vars)
}

/// Writes `n` numbered lines to each of stdout and stderr, from 1 to `n`.
fn print(n: u64) -> Reply {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for i in 1..=n {
        writeln!(out, "stdout line {i}").map_err(|e| format!("misbehave: stdout: {e}"))?;
        writeln!(err, "stderr line {i}").map_err(|e| format!("misbehave: stderr: {e}"))?;
    }
    out.flush().map_err(|e| format!("misbehave: stdout: {e}"))?;
    encode(&n)
}

/// How many messages this instance has handled, this one included: always
/// 1 with a fresh instance per message, more when the host reuses instances.
fn messages_seen() -> Reply {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    encode(&(SEEN.fetch_add(1, Ordering::Relaxed) + 1))
}

/// The context the host passed in, with the field names of the WIT record,
/// and who sent the message, as the `client` interface answers.
fn context(ctx: &Context) -> Reply {
    #[derive(Serialize)]
    struct Fields<'a> {
        handler: &'a str,
        request_id: u64,
        peer: String,
        timeout_ms: u32,
        traceparent: Option<&'a str>,
        caller: Option<Caller>,
    }
    #[derive(Serialize)]
    struct Caller {
        spiffe_id: Option<String>,
        dns_names: Vec<String>,
    }
    encode(&Fields {
        handler: &ctx.handler,
        request_id: ctx.request_id,
        peer: client::peer(),
        timeout_ms: ctx.timeout_ms,
        traceparent: ctx.traceparent.as_deref(),
        caller: client::caller().map(|c| Caller {
            spiffe_id: c.spiffe_id,
            dns_names: c.dns_names,
        }),
    })
}

/// Blocks in the host for `ms` milliseconds (`wasi:io/poll` on the monotonic
/// clock), then returns `ms`. Unlike `loop`, the guest runs no code meanwhile,
/// so an epoch or fuel deadline only takes effect once the sleep ends; a
/// wall-clock timeout around the call cancels it sooner.
/// Says so on stdout first, so that a test can wait for the guest to have
/// started instead of guessing how long the host takes to get there.
fn sleep(ms: u64) -> Reply {
    say(&format!("sleeping {ms} ms"))?;
    std::thread::sleep(Duration::from_millis(ms));
    encode(&ms)
}

/// Waits until a file exists (in a granted directory), then returns its
/// path: a test decides when this call ends, and so the order of replies,
/// without racing on sleep lengths. Says on stdout when it starts waiting
/// and when it found the file.
fn wait_file(path: &str) -> Reply {
    say(&format!("waiting for {path}"))?;
    while std::fs::metadata(path).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    say(&format!("found {path}"))?;
    encode(path)
}

/// One line on stdout, `misbehave: <what>`, logged by the host at once.
fn say(what: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "misbehave: {what}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("misbehave: stdout: {e}"))
}
