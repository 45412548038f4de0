//! The load run in interleaved rounds.
//!
//! Every target is started once, up front, and stays idle while others are
//! measured. Each point is then measured in rounds: one round loads the
//! ceilings and then every target back to back, so each target is compared
//! with a ceiling measured seconds before it, not minutes (the shared
//! machine's speed drifts by ±30% within a minute). One JSON line per
//! target per point aggregates its rounds.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;

use crate::RunArgs;
use crate::load::{self, Exchange, Outcome, Point, Server, Timing, Transport};
use crate::targets::{self, Example, HostVariant, Message, Operation, Target};
use crate::tls::SelfSigned;

/// Every target a run knows, in the order a round measures them (every
/// other round, backwards): each ceiling beside the targets compared with
/// it.
const TARGETS: [&str; 24] = [
    "ceiling",
    "host",
    "host-reuse",
    "host-signed",
    "seed",
    "ceiling-tls",
    "host-tls",
    "python-arrpc-echo",
    "host-python-echo",
    "host-python-echo-reuse",
    "host-js-echo",
    "host-js-echo-reuse",
    "python-arrpc-sum",
    "host-python-sum",
    "host-python-sum-reuse",
    "host-js-sum",
    "host-js-sum-reuse",
    "python-arrpc-identity",
    "host-python-identity",
    "host-python-identity-reuse",
    "host-js-identity",
    "host-js-identity-reuse",
    // Rust echo beside the interpreted languages, for scale.
    "host-echo-vs-python",
    "host-reuse-vs-python",
];

/// The host targets a `--baseline-host-bin` build is measured as too, each
/// beside the target it is compared with.
const BASELINES: [(&str, &str); 2] = [
    ("host", "host@baseline"),
    ("host-reuse", "host-reuse@baseline"),
];

/// A server started for the whole run.
struct Started {
    name: &'static str,
    server: Server,
    /// Sends HMAC-signed envelopes instead of bare messages.
    signed: bool,
    /// The ceiling its ratios are against; `None` for a ceiling.
    ceiling: Option<&'static str>,
    /// Another target it is judged against too: the Python arrpc server
    /// running the same operation, or the baseline build of the same host.
    reference: Option<Reference>,
    op: Operation,
    message: Message,
    /// Messages one instance serves, for the language targets.
    reuse: Option<u32>,
    _process: Target,
}

/// A target another is judged against beside its ceiling, and the key its
/// ratios are reported under (`ratio_to_<key>`).
#[derive(Clone, Copy)]
struct Reference {
    key: &'static str,
    name: &'static str,
}

impl Reference {
    fn python_arrpc(name: &'static str) -> Reference {
        Reference {
            key: "python_arrpc",
            name,
        }
    }
}

impl Started {
    /// This target started from the baseline build, under its alias.
    fn into_baseline(self, alias: &'static str) -> Started {
        Started {
            name: alias,
            ..self
        }
    }

    /// This target, judged against its baseline build too.
    fn against_baseline(self) -> Started {
        let reference = BASELINES
            .iter()
            .find(|(of, _)| *of == self.name)
            .map(|&(_, alias)| Reference {
                key: "baseline",
                name: alias,
            });
        Started { reference, ..self }
    }

    fn exchange(&self, payload: usize) -> Exchange {
        if self.signed {
            Exchange::signed(payload, targets::BENCH_SECRET)
        } else {
            self.op.exchange(payload, self.message)
        }
    }
}

pub fn run(
    args: &RunArgs,
    repo: &Path,
    host_bin: &Path,
    server_cpu: Option<usize>,
    rt: &Runtime,
) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    for name in &args.targets {
        anyhow::ensure!(
            TARGETS.contains(&name.as_str()),
            "unknown target `{name}` ({})",
            TARGETS.join(", ")
        );
    }
    let requested = |name: &str| args.targets.iter().any(|t| t == name);
    let tls_wanted = requested("host-tls") || requested("ceiling-tls");
    // Outlives every target: the TLS servers read its files at start.
    let certs = tls_wanted.then(SelfSigned::generate).transpose()?;
    let env = Env {
        args,
        repo,
        host_bin,
        echo: None,
        server_cpu,
        certs: certs.as_ref(),
    };
    let mut started = Vec::new();
    // The plain ceiling always runs, since ratios need it; the TLS one
    // whenever a TLS target does.
    for name in TARGETS.into_iter().filter(|&name| {
        name == "ceiling" || (name == "ceiling-tls" && tls_wanted) || requested(name)
    }) {
        let target = start(name, &env)?;
        match (
            &args.baseline_host_bin,
            BASELINES.iter().find(|(of, _)| *of == name),
        ) {
            (Some(baseline), Some(&(_, alias))) => {
                started.extend(target.map(Started::against_baseline));
                let env = Env {
                    host_bin: baseline,
                    echo: args.baseline_echo.as_deref(),
                    ..env
                };
                started.extend(start(alias, &env)?.map(|s| s.into_baseline(alias)));
            }
            _ => started.extend(target),
        }
    }

    let timing = Timing {
        warmup: args.warmup,
        measure: args.measure,
        reply_timeout: load::REPLY_TIMEOUT,
    };
    let mut compared = Vec::new();
    for point in points(args) {
        let results = measure(&started, point, timing, args.rounds, rt);
        for (target, done) in started.iter().zip(&results) {
            // Each round paired with the rate `base` measured in that round.
            let against = |base: Option<&str>| -> Vec<(&Outcome, Option<f64>)> {
                let base = base.and_then(|b| started.iter().position(|s| s.name == b));
                done.iter()
                    .enumerate()
                    .filter_map(|(round, outcome)| {
                        let rate = base
                            .and_then(|b| results[b][round].as_ref())
                            .filter(|b| b.failure.is_none() && b.msgs_per_s > 0.0)
                            .map(|b| b.msgs_per_s);
                        Some((outcome.as_ref()?, rate))
                    })
                    .collect()
            };
            let to_reference = target
                .reference
                .map(|r| (r, summarize(&against(Some(r.name)))));
            let summary = summarize(&against(target.ceiling));
            report(target, &point, &summary, to_reference.as_ref());
            if let Some((r, to)) = to_reference.filter(|(r, _)| r.key == "baseline") {
                let base = started.iter().position(|s| s.name == r.name);
                let base_rate = base.and_then(|b| {
                    median(results[b].iter().flatten().map(|o| o.msgs_per_s).collect())
                });
                compared.push(Compared {
                    name: target.name,
                    point,
                    this: summary.msgs_per_s,
                    baseline: base_rate,
                    to,
                });
            }
        }
    }
    if !compared.is_empty() {
        print_comparison(args, &compared);
    }
    Ok(())
}

/// One point of a target judged against its baseline build: both rates
/// (medians over rounds) and the ratio's summary.
struct Compared<'a> {
    name: &'a str,
    point: Point,
    this: Option<f64>,
    baseline: Option<f64>,
    to: Summary,
}

/// Each point of the targets judged against a baseline build, as a table
/// on stderr (stdout keeps one JSON line per target and point).
fn print_comparison(args: &RunArgs, compared: &[Compared<'_>]) {
    let base = args.baseline_name.as_deref().unwrap_or("baseline");
    let rate = |r: Option<f64>| r.map_or("failed".to_owned(), |r| format!("{:.1}k", r / 1e3));
    let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.3}"));
    eprintln!();
    eprintln!(
        "| target | conns x pipeline | this build, msg/s | {base}, msg/s | ratio (min-max over {} rounds) |",
        args.rounds
    );
    eprintln!("|---|---|---|---|---|");
    for Compared {
        name,
        point: p,
        this,
        baseline,
        to,
    } in compared
    {
        eprintln!(
            "| {name} | {} x {} | {} | {} | {} ({}-{}) |",
            p.conns,
            p.pipeline,
            rate(*this),
            rate(*baseline),
            ratio(to.ratio),
            ratio(to.ratio_min),
            ratio(to.ratio_max),
        );
    }
}

/// What starting a target needs.
#[derive(Clone, Copy)]
struct Env<'a> {
    args: &'a RunArgs,
    repo: &'a Path,
    host_bin: &'a Path,
    /// The echo component `host_bin` serves; `None`: this tree's.
    echo: Option<&'a Path>,
    server_cpu: Option<usize>,
    certs: Option<&'a SelfSigned>,
}

/// Starts target `name`; `None` when it cannot be measured here (the Python
/// arrpc server without its Python).
fn start(name: &'static str, env: &Env<'_>) -> anyhow::Result<Option<Started>> {
    let name = BASELINES
        .iter()
        .find(|(_, alias)| *alias == name)
        .map_or(name, |(of, _)| of);
    let cpu = env.server_cpu;
    let host = |variant| {
        let wasm = match env.echo {
            // The host reads it relative to its config's folder.
            Some(echo) => std::path::absolute(echo)?,
            None => targets::echo_component(env.repo)?,
        };
        targets::host(env.host_bin, &wasm, cpu, variant, None)
    };
    let python = &env.args.seed_python;
    let python_arrpc = |op| {
        if python.exists() {
            targets::python_arrpc(python, env.repo, cpu, op).map(Some)
        } else {
            eprintln!(
                "{name}: not measured: {} not found (create a venv with arrpc==0.5.0 or pass --seed-python)",
                python.display()
            );
            Ok(None)
        }
    };
    let started = |process: Target, ceiling, reference, op, reuse| Started {
        name,
        server: Server {
            addr: process.addr,
            transport: Transport::Tcp,
        },
        signed: false,
        ceiling,
        reference,
        op,
        message: env.args.message,
        reuse,
        _process: process,
    };
    // `seed` is the Python arrpc server's echo under its older name.
    if let Some(op) = name
        .strip_prefix("python-arrpc-")
        .or((name == "seed").then_some("echo"))
        .map(operation)
    {
        op.takes(env.args.message)
            .with_context(|| format!("target {name}"))?;
        return Ok(python_arrpc(op)?.map(|p| started(p, Some("ceiling"), None, op, None)));
    }
    if let Some((lang, op, reused)) = language_target(name) {
        op.takes(env.args.message)
            .with_context(|| format!("target {name}"))?;
        let reuse = if reused { env.args.reuse } else { 1 };
        let wasm = match lang {
            Some(lang) => lang.component(env.repo)?,
            None => targets::echo_component(env.repo)?,
        };
        let served = match (lang, op) {
            (Some(Example::Python), Operation::Echo) => "python-echo",
            (Some(Example::Python), Operation::Sum) => "python-sum",
            (Some(Example::Js), Operation::Echo) => "js-echo",
            (Some(Example::Js), Operation::Sum) => "js-sum",
            (Some(Example::Python), Operation::Identity) => "python-identity",
            (Some(Example::Js), Operation::Identity) => "js-identity",
            (None, _) => "echo",
        };
        let process = targets::example_host(env.host_bin, &wasm, served, reuse, cpu)?;
        let reference = match op {
            Operation::Echo => "python-arrpc-echo",
            Operation::Identity => "python-arrpc-identity",
            Operation::Sum => "python-arrpc-sum",
        };
        return Ok(Some(started(
            process,
            Some("ceiling"),
            Some(Reference::python_arrpc(reference)),
            op,
            Some(reuse),
        )));
    }
    let certs = || env.certs.expect("made when a TLS target is requested");
    let tls = || anyhow::Ok(Transport::Tls(certs().connector()?));
    let (process, transport, ceiling) = match name {
        "ceiling" => (targets::ceiling(cpu, None)?, Transport::Tcp, None),
        "ceiling-tls" => (targets::ceiling(cpu, Some(certs()))?, tls()?, None),
        "host" => (host(HostVariant::Fresh)?, Transport::Tcp, Some("ceiling")),
        "host-reuse" => (host(HostVariant::Reuse)?, Transport::Tcp, Some("ceiling")),
        "host-signed" => (host(HostVariant::Signed)?, Transport::Tcp, Some("ceiling")),
        "host-tls" => (
            host(HostVariant::Tls(certs()))?,
            tls()?,
            Some("ceiling-tls"),
        ),
        _ => unreachable!("TARGETS lists every name matched here"),
    };
    Ok(Some(Started {
        name,
        server: Server {
            addr: process.addr,
            transport,
        },
        signed: name == "host-signed",
        ceiling,
        reference: None,
        op: Operation::Echo,
        message: Message::Sized,
        reuse: None,
        _process: process,
    }))
}

/// The operation a `python-arrpc-OP` or `host-LANG-OP` target runs.
fn operation(name: &str) -> Operation {
    if name.starts_with("sum") {
        Operation::Sum
    } else if name.starts_with("identity") {
        Operation::Identity
    } else {
        Operation::Echo
    }
}

/// A target compared with the Python arrpc server: its example (`None`
/// for the Rust echo), operation and whether it reuses instances.
fn language_target(name: &str) -> Option<(Option<Example>, Operation, bool)> {
    match name {
        "host-echo-vs-python" => return Some((None, Operation::Echo, false)),
        "host-reuse-vs-python" => return Some((None, Operation::Echo, true)),
        _ => {}
    }
    let rest = name.strip_prefix("host-")?;
    let (lang, rest) = if let Some(rest) = rest.strip_prefix("python-") {
        (Example::Python, rest)
    } else {
        (Example::Js, rest.strip_prefix("js-")?)
    };
    Some((Some(lang), operation(rest), rest.ends_with("-reuse")))
}

/// Measures `point` in `rounds` rounds, each loading every started target
/// in turn. `results[t][r]` is target `t` in round `r`: `None` once the
/// target has failed at this point, since retrying would only wait out the
/// same failure again.
fn measure(
    started: &[Started],
    point: Point,
    timing: Timing,
    rounds: usize,
    rt: &Runtime,
) -> Vec<Vec<Option<Outcome>>> {
    let mut results: Vec<Vec<Option<Outcome>>> = started.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Every other round goes backwards, so two targets compared in the
        // same round (a build and its baseline, a handler and the Python
        // arrpc server) take turns at going first.
        let mut order: Vec<usize> = (0..started.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (target, done) = (&started[index], &mut results[index]);
            let failed = done.iter().flatten().any(|o| o.failure.is_some());
            let outcome = (!failed).then(|| {
                rt.block_on(load::drive(
                    &target.server,
                    point,
                    timing,
                    target.exchange(point.payload),
                    Arc::default(),
                ))
            });
            done.push(outcome);
        }
    }
    results
}

/// Every combination of the requested connections, depths and sizes.
fn points(args: &RunArgs) -> Vec<Point> {
    let mut points = Vec::new();
    for &conns in &args.conns {
        for &pipeline in &args.pipeline {
            for &payload in &args.payload {
                points.push(Point {
                    conns,
                    pipeline,
                    payload,
                });
            }
        }
    }
    points
}

/// One target at one point, over its rounds.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Rounds measured: fewer than requested when the target failed.
    pub rounds: usize,
    pub msgs_per_s: Option<f64>,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub errors: u64,
    pub ratio: Option<f64>,
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    pub failure: Option<String>,
}

/// Aggregates one target's rounds, each paired with the rate its ceiling
/// measured in the same round (`None` for a ceiling, or when that round's
/// ceiling failed).
///
/// Messages/s and the ratio are medians over rounds, so one round caught
/// in a slow spell moves neither; `ratio_min`/`ratio_max` show the spread.
/// p50 and p99 come from the histograms of all rounds merged, so every
/// measured reply counts once (the median round alone would drop the rest).
/// A failed round fails the point: its rate would be meaningless, not zero.
pub fn summarize(rounds: &[(&Outcome, Option<f64>)]) -> Summary {
    let errors = rounds.iter().map(|(o, _)| o.errors).sum();
    let failed = rounds
        .iter()
        .enumerate()
        .find_map(|(r, (o, _))| Some(format!("round {}: {}", r + 1, o.failure.as_ref()?)));
    if failed.is_some() {
        return Summary {
            rounds: rounds.len(),
            errors,
            failure: failed,
            ..Summary::default()
        };
    }
    let mut merged = Histogram::<u64>::new(3).expect("valid precision");
    for (o, _) in rounds {
        merged.add(&o.histogram).expect("same precision");
    }
    let quantile = |q| (!merged.is_empty()).then(|| merged.value_at_quantile(q));
    let ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|(o, ceiling)| Some(o.msgs_per_s / (*ceiling)?))
        .collect();
    Summary {
        rounds: rounds.len(),
        msgs_per_s: median(rounds.iter().map(|(o, _)| o.msgs_per_s).collect()),
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        errors,
        ratio: median(ratios.clone()),
        ratio_min: ratios.iter().copied().reduce(f64::min),
        ratio_max: ratios.iter().copied().reduce(f64::max),
        failure: None,
    }
}

/// The middle value, or the mean of the two middle ones.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

/// Prints one JSON line on stdout; `to_reference` holds the ratios to the
/// target it is judged against besides its ceiling, if any.
fn report(target: &Started, p: &Point, s: &Summary, to_reference: Option<&(Reference, Summary)>) {
    let thousandths = |r: Option<f64>| r.map(|r| (r * 1000.0).round() / 1000.0);
    let mut line = serde_json::json!({
        "target": target.name,
        "conns": p.conns,
        "pipeline": p.pipeline,
        "payload": p.payload,
        "rounds": s.rounds,
        "msgs_per_s": s.msgs_per_s.map(f64::round),
        "p50_us": s.p50_us,
        "p99_us": s.p99_us,
        "errors": s.errors,
        "ceiling": target.ceiling,
        "ratio_to_ceiling": thousandths(s.ratio),
        "ratio_min": thousandths(s.ratio_min),
        "ratio_max": thousandths(s.ratio_max),
        "failure": s.failure,
    });
    if let Some(reuse) = target.reuse {
        line["reuse"] = reuse.into();
    }
    if let Some((reference, to)) = to_reference {
        let key = reference.key;
        line[key] = reference.name.into();
        line[format!("ratio_to_{key}")] = thousandths(to.ratio).into();
        line[format!("ratio_to_{key}_min")] = thousandths(to.ratio_min).into();
        line[format!("ratio_to_{key}_max")] = thousandths(to.ratio_max).into();
    }
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(msgs_per_s: f64, latencies_us: &[u64], failure: Option<&str>) -> Outcome {
        let mut histogram = Histogram::new(3).unwrap();
        for &l in latencies_us {
            histogram.record(l).unwrap();
        }
        Outcome {
            msgs_per_s,
            histogram,
            errors: 1,
            failure: failure.map(str::to_owned),
        }
    }

    #[test]
    fn rates_and_ratios_are_medians_of_rounds_against_the_same_rounds_ceiling() {
        let (a, b, c) = (
            outcome(100.0, &[10, 10], None),
            outcome(300.0, &[20], None),
            outcome(120.0, &[1000], None),
        );
        // Ratios per round: 0.5, 0.6, 0.4; a ratio of medians would be
        // 120 / 500 = 0.24.
        let s = summarize(&[(&a, Some(200.0)), (&b, Some(500.0)), (&c, Some(300.0))]);
        assert_eq!(s.rounds, 3);
        assert_eq!(s.msgs_per_s, Some(120.0));
        assert_eq!(s.ratio, Some(0.5));
        assert_eq!(s.ratio_min, Some(0.4));
        assert_eq!(s.ratio_max, Some(0.6));
        assert_eq!(s.errors, 3);
        // Merged: 10, 10, 20, 1000.
        assert_eq!(s.p50_us, Some(10));
        assert!(s.p99_us.unwrap() >= 1000);
        assert_eq!(s.failure, None);
    }

    #[test]
    fn rounds_without_a_ceiling_give_no_ratio() {
        let (a, b) = (outcome(100.0, &[5], None), outcome(200.0, &[5], None));
        let s = summarize(&[(&a, None), (&b, Some(400.0))]);
        assert_eq!(s.msgs_per_s, Some(150.0));
        assert_eq!(s.ratio, Some(0.5));
        assert_eq!(summarize(&[(&a, None)]).ratio, None);
    }

    #[test]
    fn a_failed_round_fails_the_point_without_a_rate() {
        let (a, b) = (outcome(100.0, &[5], None), outcome(3.0, &[], Some("lost")));
        let s = summarize(&[(&a, Some(200.0)), (&b, Some(200.0))]);
        assert_eq!(s.failure.as_deref(), Some("round 2: lost"));
        assert_eq!((s.msgs_per_s, s.ratio, s.p50_us), (None, None, None));
        assert_eq!(s.errors, 2);
    }
}
