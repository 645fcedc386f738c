//! `corekv-server`: parses flags, sets up logging to stderr, runs the server.

#![deny(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use corekv::config::{Config, ServerArgs};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let args = ServerArgs::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr closed: the collector went
        // away) is dropped. By default tracing reports that with eprintln!,
        // which panics on the same broken stderr and kills the logging thread —
        // the signal thread, or a shard.
        .log_internal_errors(false)
        .with_env_filter(
            EnvFilter::try_from_env("COREKV_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    corekv::failpoint::arm_from_env();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("corekv-server: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = Config::from_args(args).context("invalid configuration")?;
    tracing::info!(
        "corekv-server {} starting: engine {}, {} shards, data dir {}, address {}",
        env!("CARGO_PKG_VERSION"),
        config.engine.name(),
        config.nr_shards,
        config.data_dir.display(),
        config.addr
    );
    corekv::server::run(config, |addr| tracing::info!("listening on {addr}"))?;
    Ok(())
}
