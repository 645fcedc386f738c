//! `corekv-server`: parses flags (and their `COREKV_*` environment
//! variables), sets up logging to stderr, runs the server.

#![deny(unsafe_code)]

use anyhow::Context;
use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
use corekv::config::{log_filter, Config, LogFormat, ServerArgs};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let matches = ServerArgs::command().get_matches();
    let args = ServerArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let from_env = matches.value_source("log") == Some(ValueSource::EnvVariable);
    if let Err(e) = init_logging(&args, from_env) {
        eprintln!("corekv-server: error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
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

/// Logs to stderr with the filter of `--log`/`COREKV_LOG`, else `RUST_LOG`,
/// else `info`; a filter that does not parse is an error, not ignored.
fn init_logging(args: &ServerArgs, from_env: bool) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (text, source) = log_filter(args.log.as_deref(), from_env, rust_log.as_deref());
    let filter = EnvFilter::builder()
        .parse(&text)
        .with_context(|| format!("invalid log filter '{text}' (from {source})"))?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed: the collector went
        // away) is dropped. By default tracing reports that with eprintln!,
        // which panics on the same broken stderr and kills the logging thread —
        // the signal thread, or a shard.
        .log_internal_errors(false)
        .with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Ok(())
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
    if let Some(cluster) = &config.cluster {
        let me = cluster.me();
        let slots: Vec<String> = me.slots.iter().map(|r| r.to_string()).collect();
        tracing::info!(
            "cluster node {:?} ({} in the cluster file) of {} nodes, owning slots {}",
            me.name,
            me.addr,
            cluster.nodes().len(),
            slots.join(" ")
        );
        if me.addr.port() != config.addr.port() {
            // Clients are sent to the file's address: one this server does not
            // listen on sends them nowhere.
            tracing::warn!(
                "the cluster file gives node {:?} the address {}, but it listens on {} (--addr)",
                me.name,
                me.addr,
                config.addr
            );
        }
    }
    corekv::server::run(config, corekv::http::start, |addr| {
        tracing::info!("listening on {addr}")
    })?;
    Ok(())
}
