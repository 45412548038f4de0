//! The command line: `arrpc-host [serve]`, `check`, `send` and `new`.

mod new;
mod security;
mod send;
mod serve;

pub use new::INTERPRETED_REUSE;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Serves sandboxed WebAssembly handlers over the arrpc MessagePack protocol.
#[derive(Debug, Parser)]
#[command(name = "arrpc-host", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, `arrpc-host` serves.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the handlers in the config (the default).
    Serve(ServeArgs),
    /// Validate the config and load every handler, without listening.
    Check(ConfigArgs),
    /// Send one message to an arrpc server and print the reply.
    Send(send::SendArgs),
    /// Write a handler skeleton (Rust, Python, JavaScript, C or Zig) and print its config entry.
    New(new::NewArgs),
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// Path of the config file.
    #[arg(long, short, default_value = "arrpc.toml")]
    config: PathBuf,
    /// Log debug detail (per connection and message).
    #[arg(long)]
    debug: bool,
    /// How log lines are written: `human`, or `json` (one object a line).
    #[arg(long, value_enum, default_value_t)]
    log_format: crate::telemetry::LogFormat,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen here instead of the config's `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Development loop: also watch each handler's `sources` and rerun its
    /// `build` command when they change, then swap the result in.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    security: security::ServeSecurityArgs,
    /// Serve `/metrics`, `/healthz` and `/readyz` here instead of at the
    /// config's `admin.listen`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
}

/// Runs the parsed command line; errors are printed as one line.
pub fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    let result = match command {
        Command::Send(args) => {
            // A failed handshake is said in send's one `error:` line;
            // rustls's own warning about it (a reply that is not a
            // ServerHello, say) would be a second, cryptic one.
            crate::telemetry::init("warn,rustls=error", args.debug);
            return send::run(args);
        }
        Command::New(args) => {
            crate::telemetry::init("warn", false);
            new::run(&args)
        }
        Command::Check(args) => {
            let _ = crate::telemetry::install("info", args.debug, args.log_format, None);
            runtime().and_then(|rt| rt.block_on(serve::check(&args)))
        }
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Parses `5s`, `250ms` and the like.
fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}
