//! The `arrpc-host` binary: see [`arrpc_host::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = arrpc_host::cli::Cli::parse();
    arrpc_host::cli::run(cli)
}
