//! Compaction's switch copies records behind the snapshot in the new file:
//! the log's *tail* (the records written to the old file after the
//! snapshot's cut) and the records appended but not yet written. This module
//! copies them in chunks of whole records of about [`CHUNK_BYTES`], each
//! re-stamped for the new file's epoch (`format::stamp`) and written at its
//! place, so the memory a switch takes does not grow with the tail: a write
//! burst during a long snapshot (the disk engine's read every value back)
//! makes the tail gigabytes.
//!
//! A chunk is never cut inside a record: it is every record that fits in
//! [`CHUNK_BYTES`], or one record alone when that is longer (up to the frame
//! limit), read and written whole (`format::chunk_len`).

use super::format;
use crate::failpoint;
use glommio::io::BufferedFile;
use std::io;

/// The most bytes of records a chunk holds, unless one record alone is larger.
pub const CHUNK_BYTES: usize = 4 << 20;

/// What a copy wrote: bytes, chunks, and the largest chunk (the memory it took).
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyStats {
    pub bytes: u64,
    pub chunks: u64,
    pub largest_chunk: usize,
}

/// Copies whole records into `to`, the new file, stamped for its `epoch`.
/// Every chunk write checks failpoint `compaction::write` (for `shard`).
pub struct RecordCopy<'a> {
    to: &'a BufferedFile,
    epoch: u64,
    shard: usize,
    stats: CopyStats,
}

impl<'a> RecordCopy<'a> {
    pub fn new(to: &'a BufferedFile, epoch: u64, shard: usize) -> RecordCopy<'a> {
        RecordCopy {
            to,
            epoch,
            shard,
            stats: CopyStats::default(),
        }
    }

    /// What was copied so far.
    pub fn stats(&self) -> CopyStats {
        self.stats
    }

    /// Copies the `len` bytes of whole records at offset `from` of `file` to
    /// offset `at` of the new file, a chunk at a time, yielding between
    /// chunks.
    pub async fn copy_from_file(
        &mut self,
        file: &BufferedFile,
        from: u64,
        len: u64,
        at: u64,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let window_len = (len - done).min(CHUNK_BYTES as u64) as usize;
            let window = read_exact(file, from + done, window_len).await?;
            let chunk_len = next_chunk(&window, len - done, from + done)?;
            if chunk_len <= window.len() {
                self.write(&window[..chunk_len], at + done).await?;
            } else {
                // One record longer than a chunk: it is copied whole.
                drop(window);
                let record = read_exact(file, from + done, chunk_len).await?;
                self.write(&record, at + done).await?;
            }
            done += chunk_len as u64;
            // The reads and writes above may complete without suspending (the
            // page cache): other tasks get their turn between chunks anyway.
            // Requests run meanwhile; their appends wait in memory.
            glommio::yield_if_needed().await;
        }
        Ok(())
    }

    /// Copies `records` (whole records, in memory) to offset `at` of the new
    /// file, a chunk at a time: each chunk is copied to be stamped, and
    /// `records` may be large.
    pub async fn copy_from_memory(&mut self, records: &[u8], at: u64) -> io::Result<()> {
        let mut done = 0;
        while done < records.len() {
            let rest = &records[done..];
            let window = &rest[..rest.len().min(CHUNK_BYTES)];
            let chunk_len = next_chunk(window, rest.len() as u64, done as u64)?;
            self.write(&rest[..chunk_len], at + done as u64).await?;
            done += chunk_len;
            glommio::yield_if_needed().await;
        }
        Ok(())
    }

    /// Writes a copy of `records`, stamped for the new file, at `at`.
    async fn write(&mut self, records: &[u8], at: u64) -> io::Result<()> {
        failpoint::check("compaction::write", Some(self.shard))?;
        // Records are valid only in the file of the epoch they carry, and
        // the tail was stamped for the old file.
        let mut chunk = records.to_vec();
        format::stamp(&mut chunk, self.epoch);
        let len = chunk.len();
        if self.to.write_at(chunk, at).await? != len {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        self.stats.bytes += len as u64;
        self.stats.chunks += 1;
        self.stats.largest_chunk = self.stats.largest_chunk.max(len);
        Ok(())
    }
}

/// The length of the chunk starting `window`, of `left` bytes of records
/// still to copy from offset `offset`: an error if the bytes there are not
/// whole records (the file changed under the switch, or a bug).
fn next_chunk(window: &[u8], left: u64, offset: u64) -> io::Result<usize> {
    match format::chunk_len(window) {
        Some(len) if len as u64 <= left => Ok(len),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no whole record at offset {offset} of the records to copy"),
        )),
    }
}

/// Reads `len` bytes at `offset` of `file`; fewer is an error.
async fn read_exact(
    file: &BufferedFile,
    offset: u64,
    len: usize,
) -> io::Result<glommio::io::ReadResult> {
    let read = file.read_at(offset, len).await?;
    if read.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "read {} of {len} bytes at offset {offset} of the log",
                read.len()
            ),
        ));
    }
    Ok(read)
}
