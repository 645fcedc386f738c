//! Start-up steps that run before any shard thread: the locked-memory check,
//! the probe of the listening addresses, the signal thread, and the tables the
//! shards start from (rebuilt from the logs, or empty).

use super::state::ServerState;
use super::{bind, ServerError};
use crate::config::{Config, Engine};
use crate::log::compaction::LiveScale;
use crate::sys;
use crate::table::Table;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Locked memory glommio needs at the least, per process.
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// What the shards start from.
pub struct Loaded {
    /// Each shard's table, rebuilt from the logs or empty.
    pub tables: Vec<Table>,
    /// Where cross-shard batch numbering continues.
    pub next_txn_seq: u64,
    /// Each shard's intact log length (empty with the memory engine).
    pub log_lens: Vec<u64>,
    /// Each shard's live-data scale from its hint file, if it has one
    /// (`log::compaction::LiveScale`; empty with the memory engine).
    pub live_scales: Vec<Option<LiveScale>>,
    /// Each shard's log files and their numbers (empty with the memory engine).
    pub files: Vec<crate::log::ShardFiles>,
}

pub fn load_tables(config: &Config) -> Result<Loaded, ServerError> {
    let limit = config.shard_memory_limit_bytes();
    if config.engine == Engine::Memory {
        tracing::info!("recovered nothing: the memory engine keeps nothing on disk");
        return Ok(Loaded {
            tables: (0..config.nr_shards)
                .map(|_| {
                    let mut table = Table::new(limit);
                    table.set_eviction_policy(config.eviction);
                    table
                })
                .collect(),
            next_txn_seq: 0,
            log_lens: Vec::new(),
            live_scales: Vec::new(),
            files: Vec::new(),
        });
    }
    let recovered = crate::log::recover(
        &config.data_dir,
        &config.router(),
        config.salvage,
        config.engine == Engine::Disk,
    )?;
    tracing::info!(
        "recovered {} keys from {} log records{} in {:.3} s",
        recovered.nr_keys,
        recovered.nr_records,
        match recovered.hinted_keys {
            0 => String::new(),
            n => format!(" and {n} hint file entries"),
        },
        recovered.elapsed.as_secs_f64()
    );
    let mut tables = recovered.tables;
    for table in &mut tables {
        table.set_memory_limit(limit);
        table.set_eviction_policy(config.eviction);
    }
    Ok(Loaded {
        tables,
        next_txn_seq: recovered.next_txn_seq,
        log_lens: recovered.log_lens,
        live_scales: recovered.live_scales,
        files: recovered.files,
    })
}

/// Refuses to start below the locked memory glommio needs (unlimited, or a
/// limit that cannot be read, is left to the executor to report).
pub fn check_memlock() -> Result<(), ServerError> {
    match sys::memlock_limit_bytes() {
        Some(have_bytes) if have_bytes < MIN_MEMLOCK_BYTES => {
            Err(ServerError::Memlock { have_bytes })
        }
        _ => Ok(()),
    }
}

/// Binds once without SO_REUSEPORT: fails if anything already listens on the
/// address (shards bind with SO_REUSEPORT, which would otherwise silently share
/// the port with another server), turns port 0 into a concrete port, and
/// claims it until the shards listen ([`bind::PortClaim`]).
///
/// A port found in use is tried again for up to [`PORT_RELEASE_WAIT`]: a server
/// killed with `kill -9` leaves its listening socket to the kernel until the
/// kernel has torn down the io_uring rings that were waiting on it, which it
/// does in the background, within a fraction of a second. A live server keeps
/// its port, so the start still fails then, that much later.
pub fn probe_bind(addr: SocketAddr) -> Result<bind::PortClaim, ServerError> {
    let deadline = Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match bind::claim(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result.map_err(|source| ServerError::Bind { addr, source }),
        }
    }
}

/// How long start-up waits for a port a dead server's kernel state still holds.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(1);

pub fn install_signal_thread(state: Arc<ServerState>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(ServerError::Signals)?;
    std::thread::Builder::new()
        .name("corekv-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if state.is_shutting_down() {
                    tracing::warn!("second signal ({signal}): exiting now");
                    std::process::exit(1);
                }
                tracing::info!("signal {signal}: shutting down (answering requests in flight)");
                state.begin_shutdown();
            }
        })
        .map_err(ServerError::Signals)?;
    Ok(())
}
