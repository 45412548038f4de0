//! `arrpc-host`: serves sandboxed WebAssembly handlers over the arrpc wire
//! protocol.
//!
//! Dependencies flow one way: [`config`] and [`runtime`] know nothing of
//! the message port; [`outbound`] makes the connections handlers are
//! allowed, for [`runtime`]; [`server`] uses both and the shared wire
//! format; [`reload`] swaps handlers while the server runs; [`telemetry`]
//! and [`admin`] report on all of it; [`host`] wires everything together
//! into one serving host, which [`cli`] starts from the command line.

pub mod admin;
pub mod cli;
pub mod config;
pub mod host;
pub mod keyvalue;
pub mod outbound;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod telemetry;
