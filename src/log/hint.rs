//! Hint files: the disk engine's index of a compacted log, so that a
//! restart reads the index and not every value (as Bitcask's hint files).
//!
//! A compaction writes the shard's live entries as PUT records at the start
//! of the new log file, followed by the COMMIT and PREPARE records of the
//! batches in flight and then the tail appended meanwhile
//! (`log::compaction`). Once the new file is the log, the disk engine writes
//! `shard-<i>.hint` beside it: for each of those PUT records its key,
//! version, deadline and where its value is. Recovery of the disk engine
//! loads the index from the hint and replays the log only from where the
//! PUT records end; without a valid hint it replays the whole file.
//!
//! ```text
//! header (40 bytes)
//! +------------------+-------------+--------------+--------------+---------------+------------+
//! | magic "corekvHT" | version u32 | reserved u32 | log epoch u64| puts_end u64  | count u64  |
//! +------------------+-------------+--------------+--------------+---------------+------------+
//! count × entry
//! +-------------+-----+-------------+------------------+------------------+---------------+
//! | key_len u32 | key | version u64 | deadline u64 (0: | value_offset u64 | value_len u32 |
//! |             |     |             | none)            |                  | unused u32    |
//! +-------------+-----+-------------+------------------+------------------+---------------+
//! crc u32: CRC-32 of everything before it
//! ```
//!
//! Each value it describes is the only one of a PUT record of the snapshot
//! (a PUTX if the key has a deadline), so a read checks it by that record
//! (`log::values::WantedValue`) and the hint needs no checksum of it: the
//! last field, once the value's CRC-32, is written as 0 and not read (hints
//! written before keep theirs, and load the same).
//!
//! A hint is only ever an accelerator: everything in it is in the log too.
//! So a hint is used only if it is whole (its checksum), of this very log
//! file (the epoch in its header is the file's, and every log file gets a
//! new one) and describes bytes the file still has (`puts_end` within the
//! intact log); anything else — a crash while writing it, a log compacted
//! since by the log engine, damage — and it is ignored and the file replayed
//! in full. It is written to `shard-<i>.hint.tmp`, synced and renamed.
//!
//! When the disk engine seals the file a hint describes (`log::segments`),
//! the hint is renamed with it, `shard-<i>.<seq>.hint` beside
//! `shard-<i>.<seq>.seg` ([`hint_path`] of either), and recovery uses it
//! the same way. A merge of sealed segments (`log::merge`) writes one for
//! its output, which may come after other files of the shard: its entries
//! are loaded over theirs, as replaying its PUT records would.

use crate::entry::{Location, ValueCheck};
use crate::table::{Entry, Table};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"corekvHT";
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 40;
/// Bytes written per chunk before yielding to requests.
const CHUNK_BYTES: usize = 1 << 20;

/// The hint file of the log at `log_path`.
pub fn hint_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("hint")
}

/// The temporary file a hint is written to.
fn temp_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("hint.tmp")
}

/// What a valid hint says about its log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintHeader {
    pub epoch: u64,
    /// Where the PUT records it describes end: replay continues there.
    pub puts_end: u64,
    pub count: u64,
}

fn header_bytes(header: HintHeader) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&header.epoch.to_le_bytes());
    out[24..32].copy_from_slice(&header.puts_end.to_le_bytes());
    out[32..40].copy_from_slice(&header.count.to_le_bytes());
    out
}

/// Appends one entry: the snapshot's `entry` (key, version, deadline), whose
/// value the new log holds at `location`.
fn encode_entry(out: &mut Vec<u8>, entry: &Entry, location: Location) {
    let key = entry.key();
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&entry.version().to_le_bytes());
    out.extend_from_slice(&entry.deadline().unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&location.offset.to_le_bytes());
    out.extend_from_slice(&location.len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// Writes the hint of the log at `log_path` (of `epoch`, its PUT records
/// ending at `puts_end`): `entries` with where their values are. Written in
/// chunks, yielding between them, to a temporary file that is synced and
/// then renamed into place.
pub async fn write(
    log_path: &Path,
    epoch: u64,
    puts_end: u64,
    entries: &[(Entry, Location)],
) -> io::Result<()> {
    let temp = temp_path(log_path);
    let written = write_temp(&temp, epoch, puts_end, entries).await;
    let installed = written.and_then(|()| std::fs::rename(&temp, hint_path(log_path)));
    if installed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    installed
}

async fn write_temp(
    temp: &Path,
    epoch: u64,
    puts_end: u64,
    entries: &[(Entry, Location)],
) -> io::Result<()> {
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(temp)
        .await
        .map_err(io::Error::from)?;
    let header = HintHeader {
        epoch,
        puts_end,
        count: entries.len() as u64,
    };
    let mut crc = crc32fast::Hasher::new();
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    chunk.extend_from_slice(&header_bytes(header));
    let mut offset = 0;
    for (entry, location) in entries {
        encode_entry(&mut chunk, entry, *location);
        if chunk.len() >= CHUNK_BYTES {
            crc.update(&chunk);
            offset += write_chunk(&file, &mut chunk, offset).await?;
            glommio::yield_if_needed().await;
        }
    }
    crc.update(&chunk);
    chunk.extend_from_slice(&crc.finalize().to_le_bytes());
    write_chunk(&file, &mut chunk, offset).await?;
    file.fdatasync().await.map_err(io::Error::from)?;
    file.close().await.map_err(io::Error::from)
}

async fn write_chunk(
    file: &glommio::io::BufferedFile,
    chunk: &mut Vec<u8>,
    offset: u64,
) -> io::Result<u64> {
    let bytes = std::mem::replace(chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
    let len = bytes.len();
    let written = file
        .write_at(bytes, offset)
        .await
        .map_err(io::Error::from)?;
    if written != len {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
    }
    Ok(len as u64)
}

/// Removes the hint of the log at `log_path` and any temporary one (a log
/// whose hint may no longer describe it, or a leftover of a crash).
pub fn remove(log_path: &Path) -> io::Result<()> {
    for path in [hint_path(log_path), temp_path(log_path)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Why a hint was not used.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("no hint file")]
    Missing,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
}

/// Checks the hint of the log at `log_path` against the log's `epoch` and
/// length, then loads its entries into `table` (as file number `file`), over
/// what earlier files of the shard loaded. Returns where replay continues.
/// The hint is verified whole before anything is loaded; a read that fails
/// after that leaves what it loaded (an empty table is emptied again), and
/// the caller replays the whole file, whose PUT records restate it.
pub fn load(
    log_path: &Path,
    epoch: u64,
    log_len: u64,
    table: &mut Table,
    file: u32,
) -> Result<HintHeader, Unusable> {
    let was_empty = table.is_empty();
    let loaded = load_into(log_path, epoch, log_len, table, file);
    // The file is then replayed whole, which puts every key the hint
    // loaded back as its PUT record has it: what a partial load left is
    // harmless, but a table that was empty is emptied again at once.
    if loaded.is_err() && was_empty {
        table.drain().for_each(drop);
    }
    loaded
}

fn load_into(
    log_path: &Path,
    epoch: u64,
    log_len: u64,
    table: &mut Table,
    file: u32,
) -> Result<HintHeader, Unusable> {
    let path = hint_path(log_path);
    let header = verify(&path, epoch, log_len)?;
    let mut reader = BufReader::with_capacity(CHUNK_BYTES, File::open(&path)?);
    let mut skip = [0u8; HEADER_BYTES];
    reader.read_exact(&mut skip)?;
    table.reserve(usize::try_from(header.count).unwrap_or(usize::MAX));
    let mut key = Vec::new();
    for _ in 0..header.count {
        let key_len = read_u32(&mut reader)? as usize;
        key.resize(key_len, 0);
        reader.read_exact(&mut key)?;
        let version = read_u64(&mut reader)?;
        let deadline = Some(read_u64(&mut reader)?).filter(|&d| d != 0);
        let offset = read_u64(&mut reader)?;
        let len = read_u32(&mut reader)?;
        let _unused = read_u32(&mut reader)?;
        // The snapshot wrote the key's PUT, a PUTX if it has a deadline.
        let location = Location {
            file,
            offset,
            len,
            check: ValueCheck::Record {
                with_deadline: deadline.is_some(),
            },
        };
        table.load_on_disk(&key, location, version, deadline);
    }
    Ok(header)
}

/// Reads the whole hint once, checking its header and checksum.
fn verify(path: &Path, epoch: u64, log_len: u64) -> Result<HintHeader, Unusable> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len < (HEADER_BYTES + 4) as u64 {
        return Err(Unusable::Invalid(format!("{len} bytes: too short")));
    }
    let mut reader = BufReader::with_capacity(CHUNK_BYTES, file);
    let mut head = [0u8; HEADER_BYTES];
    reader.read_exact(&mut head)?;
    let field = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    if &head[..8] != MAGIC || head[8..12] != VERSION.to_le_bytes() {
        return Err(Unusable::Invalid("not a hint file of this version".into()));
    }
    let header = HintHeader {
        epoch: field(16),
        puts_end: field(24),
        count: field(32),
    };
    if header.epoch != epoch {
        return Err(Unusable::Invalid("it describes another log file".into()));
    }
    if header.puts_end > log_len {
        return Err(Unusable::Invalid(format!(
            "it describes {} bytes of a log of {log_len}",
            header.puts_end
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    let mut rest = len - HEADER_BYTES as u64 - 4;
    let mut buf = vec![0u8; CHUNK_BYTES];
    while rest > 0 {
        let n = rest.min(CHUNK_BYTES as u64) as usize;
        reader.read_exact(&mut buf[..n])?;
        crc.update(&buf[..n]);
        rest -= n as u64;
    }
    let mut stored = [0u8; 4];
    reader.read_exact(&mut stored)?;
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(Unusable::Invalid("its checksum does not match".into()));
    }
    Ok(header)
}

fn read_u32(reader: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(reader: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    reader.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}
