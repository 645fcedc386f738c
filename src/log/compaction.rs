//! Online compaction of a shard's log: rewrite the shard's live data as a
//! snapshot into a new file while the shard keeps serving, then switch to it
//! atomically, so the log stays within a small factor of the live data however
//! often keys are overwritten.
//!
//! 1. *Snapshot* (synchronous, on the shard): remember the log position `cut`
//!    and take the table's entries — references, not copies of values. Only done
//!    when no cross-shard batch is prepared here, so the table holds no
//!    tentative writes. COMMIT records of batches still being confirmed by their
//!    participants are carried into the snapshot (recovery may need them).
//! 2. *Write* the snapshot as PUT records to `shard-<i>.log.compact`, in chunks,
//!    yielding between them: requests keep running and appending to the old log.
//! 3. *Switch* ([`LogWriter::switch_file`]): the records appended after `cut`
//!    are copied behind the snapshot, the new file is fdatasync-ed and renamed
//!    over `shard-<i>.log` (atomic), and appends continue in it. Only this step
//!    makes requests wait.
//!
//! A crash at any point leaves either the old log or the new one under the
//! log's name; a leftover `.compact` file is deleted at the next start.

use super::format::{self, Effect};
use super::LogWriter;
use crate::failpoint;
use crate::txn::TxnId;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Snapshot bytes written per chunk before yielding to requests.
const CHUNK_BYTES: usize = 1 << 20;

/// When a log is worth compacting: larger than `min_bytes` and more than twice
/// the live data (the table's size estimate, which errs high).
pub fn should_compact(file_len: u64, live_bytes: u64, min_bytes: u64) -> bool {
    file_len > min_bytes && file_len > 2 * live_bytes
}

/// One entry of a snapshot: key, value, version.
pub type SnapshotEntry = (Box<[u8]>, Arc<[u8]>, u64);

/// The table's contents at `cut`, ready to be written without the table.
pub struct Snapshot {
    pub cut: u64,
    pub entries: Vec<SnapshotEntry>,
    pub commits: Vec<TxnId>,
}

/// The temporary file a shard's compaction writes.
pub fn compact_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("log.compact")
}

/// Writes `snapshot` to a new file and switches `log` to it. Returns the new
/// file's size.
pub async fn compact(log: &LogWriter, log_path: &Path, snapshot: Snapshot) -> std::io::Result<u64> {
    let tmp = compact_path(log_path);
    let scope = Some(log.shard());
    failpoint::check("compaction::create", scope)?;
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .buffered_open(&tmp)
        .await
        .map_err(std::io::Error::from)?;
    let epoch = super::new_epoch();
    let snapshot_len = write_snapshot(&file, &snapshot, epoch, scope).await?;
    let install = async {
        failpoint::check("compaction::rename", scope)?;
        std::fs::rename(&tmp, log_path)?;
        let dir = log_path.parent().unwrap_or(Path::new("."));
        failpoint::check("compaction::dir_fsync", scope)?;
        std::fs::File::open(dir)?.sync_all()
    };
    log.switch_file(file, (snapshot.cut, snapshot_len), epoch, install)
        .await?;
    Ok(log.file_len())
}

async fn write_snapshot(
    file: &glommio::io::BufferedFile,
    snapshot: &Snapshot,
    epoch: u64,
    scope: Option<usize>,
) -> std::io::Result<u64> {
    let mut header = Vec::with_capacity(format::FILE_HEADER_BYTES);
    format::write_file_header(&mut header, epoch);
    let mut offset = write_chunk(file, &mut header, 0, scope).await?;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    for txn in &snapshot.commits {
        format::write_commit(&mut chunk, *txn);
    }
    for (key, value, version) in &snapshot.entries {
        let put = Effect::Put {
            key,
            version: *version,
            value,
        };
        format::write_effect(&mut chunk, &put);
        if chunk.len() >= CHUNK_BYTES {
            format::stamp(&mut chunk, epoch);
            offset += write_chunk(file, &mut chunk, offset, scope).await?;
            glommio::yield_if_needed().await;
        }
    }
    format::stamp(&mut chunk, epoch);
    offset += write_chunk(file, &mut chunk, offset, scope).await?;
    Ok(offset)
}

async fn write_chunk(
    file: &glommio::io::BufferedFile,
    chunk: &mut Vec<u8>,
    offset: u64,
    scope: Option<usize>,
) -> std::io::Result<u64> {
    if chunk.is_empty() {
        return Ok(0);
    }
    failpoint::check("compaction::write", scope)?;
    let bytes = std::mem::replace(chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
    let len = bytes.len();
    let written = file
        .write_at(bytes, offset)
        .await
        .map_err(std::io::Error::from)?;
    if written != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short write",
        ));
    }
    Ok(len as u64)
}
