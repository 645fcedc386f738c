//! Shard log files as the tests see them: where they are, their records
//! (parsed with the server's own `log::format`), and the surgery crash tests
//! do on them — cutting, appending, comparing every byte of a directory.
#![allow(dead_code)]

use corekv::ids::TxnId;
use corekv::log::format::{parse_file, Effect, Record};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Shard `shard`'s log in `data_dir`.
pub fn log_path(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("log").join(format!("shard-{shard}.log"))
}

/// Truncates the file at `path` to `len` bytes: what a crash leaves of a log.
pub fn cut_to(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

/// A record's kind, with what tests look at: a PUT's key and version, a
/// DEL's key, a cross-shard batch's id.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Put(Vec<u8>, u64),
    Del(Vec<u8>),
    /// EXPIRE or PERSIST: the key's new deadline.
    Expire(Vec<u8>, Option<u64>),
    Batch,
    Prepare(TxnId),
    Decide(TxnId),
    Commit(TxnId),
}

/// One intact record and where it lies in its file.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// The intact records of a log file's bytes, up to the first incomplete or
/// damaged one, and the offset where they end. PAD records (the disk
/// engine's filler before a record that would cross a 4 KiB block) are left
/// out: they hold no change.
pub fn parse_log(bytes: &[u8]) -> (Vec<LogRecord>, usize) {
    let (_, parsed, end) = parse_file(bytes).expect("a log file with a valid file header");
    let mut records = Vec::new();
    for (i, (start, record)) in parsed.iter().enumerate() {
        let kind = match record {
            Record::Pad => continue,
            Record::Effect(Effect::Put { key, version, .. }) => Kind::Put(key.to_vec(), *version),
            Record::Effect(Effect::Del { key }) => Kind::Del(key.to_vec()),
            Record::Effect(Effect::Expire { key, deadline }) => {
                Kind::Expire(key.to_vec(), *deadline)
            }
            Record::Batch(_) => Kind::Batch,
            Record::Prepare { txn, .. } => Kind::Prepare(*txn),
            Record::Decide { txn, .. } => Kind::Decide(*txn),
            Record::Commit { txn } => Kind::Commit(*txn),
        };
        let record_end = parsed.get(i + 1).map_or(end, |next| next.0);
        records.push(LogRecord {
            start: *start,
            end: record_end,
            kind,
        });
    }
    (records, end)
}

/// Every record of a log file, which must be intact from end to end but for
/// the zeros of space allocated ahead; and the file's bytes up to the end of
/// its records.
pub fn read_log(path: &Path) -> (Vec<u8>, Vec<LogRecord>) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (records, end) = parse_log(&bytes);
    if bytes[end..].iter().any(|&b| b != 0) {
        panic!(
            "{}: {} bytes after the last intact record at offset {end} are not all zeros",
            path.display(),
            bytes.len() - end
        );
    }
    bytes.truncate(end);
    (bytes, records)
}

/// The length of a log file's intact records (the file may be longer: space
/// allocated ahead of the writer).
pub fn log_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_log(&bytes).1 as u64
}

/// The records of a log file a running server may be appending to.
pub fn records_so_far(path: &Path) -> Vec<Kind> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_log(&bytes).0.into_iter().map(|r| r.kind).collect()
}

/// Appends `bytes` to the file at `path`.
pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log to append");
    file.write_all(bytes).expect("append to log");
}

/// Every file under `dir`, by path, with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read file"));
            }
        }
    }
    files
}
