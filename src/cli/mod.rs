//! The `corekv` command-line client (BRIEF §6), as a library the thin binary
//! `src/bin/corekv.rs` calls. Built on the blocking [`crate::client`].
//!
//! A run is: parse ([`args`]) → build the [`commands::Job`] (reading `set`'s
//! value from a file or stdin first, so a bad path fails before any network
//! traffic) → connect with `--timeout` (host names resolved, each address
//! tried) → send exactly one request message → print the
//! [`commands::Outcome`] ([`output`], [`render`]) → exit status. `backup`
//! goes through the server's HTTP API instead ([`admin`]).
//!
//! Exit status: 0 success; 1 an error ([`CliError`]: cannot connect, no reply
//! in time, a server error element, an aborted `mset`, an unreadable value
//! file); 2 a usage error (clap); 3 a key not found where that is a failure
//! (`rm`, `mrm`, `get --raw`). docs/cli.md is the reference for users.

pub mod admin;
pub mod args;
pub mod commands;
pub mod output;
pub mod render;

use crate::client::ClientError;
use args::Cli;
use commands::Job;
pub use output::Status;
use std::io::{self, Read, Write};
use std::time::Duration;

/// Exit status of a run that failed with a [`CliError`].
pub const ERROR_EXIT_CODE: u8 = 1;

/// Why a run failed. Each message is printed on stderr as is.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to {addr}: {reason}; is corekv-server running there?")]
    Connect { addr: String, reason: io::Error },
    #[error("no reply from {addr} within {timeout_secs} s (see --timeout)")]
    Timeout { addr: String, timeout_secs: f64 },
    #[error("connection to {addr} failed: {reason}")]
    Connection { addr: String, reason: String },
    #[error("{0}")]
    Usage(String),
    /// An I/O error on the connection, before [`run`] adds the address.
    #[error("connection failed: {0}")]
    Io(io::Error),
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("server error {code} on key '{key}': {message}")]
    KeyError {
        key: String,
        code: String,
        message: String,
    },
    #[error("mset aborted, no key was changed: server error {code}: {message}")]
    Aborted { code: String, message: String },
    #[error("malformed reply from server: {0}")]
    Protocol(String),
    #[error("cannot read the value from {from}: {error}")]
    ReadValue { from: String, error: io::Error },
    #[error("cannot write output: {0}")]
    Output(io::Error),
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        match e {
            ClientError::Connect { addr, source } => CliError::Connect {
                addr,
                reason: source,
            },
            ClientError::Io(e) => CliError::Io(e),
            ClientError::Protocol(m) => CliError::Protocol(m),
            ClientError::Server { code, message } => CliError::Server { code, message },
            routing @ ClientError::Routing(_) => CliError::Usage(routing.to_string()),
        }
    }
}

impl CliError {
    /// Names the server's address (and the timeout) in connection errors.
    fn on_connection(self, addr: &str, timeout: Duration) -> CliError {
        let addr = addr.to_owned();
        let CliError::Io(e) = self else {
            return self;
        };
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CliError::Timeout {
                addr,
                timeout_secs: timeout.as_secs_f64(),
            },
            io::ErrorKind::UnexpectedEof => CliError::Connection {
                addr,
                reason: "the server closed the connection".into(),
            },
            _ => CliError::Connection {
                addr,
                reason: e.to_string(),
            },
        }
    }
}

/// Runs one parsed command line: one connection, one request message.
pub fn run(
    cli: &Cli,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, CliError> {
    let addr = cli.global.addr.as_str();
    let timeout = cli
        .global
        .timeout
        .unwrap_or_else(|| cli.command.default_timeout());
    let job = Job::from_command(&cli.command, stdin)?;
    let outcome = job.execute(addr, timeout)?;
    output::print(&outcome, cli.global.json, out, err).map_err(CliError::Output)
}
