//! The disk engine's sealed segments: a shard's log split into files, so
//! that space can later be reclaimed a file at a time.
//!
//! ```text
//! log/shard-<i>.log              the active segment, appended to
//! log/shard-<i>.<seq:016x>.seg   sealed segments, oldest (lowest seq) first
//! log/shard-<i>.<seq:016x>.hint  the hint of a sealed segment (`log::hint`)
//! ```
//!
//! A *roll* ([`roll`], run by the log writer's flusher between rounds once the
//! active file passes `--segment-bytes`) seals the active file: it is cut to
//! its records and fdatasync-ed, its hint (if any) and then the file itself
//! are renamed to the next sealed name, a new active file (a fresh epoch, a
//! file header) is written to `shard-<i>.log.tmp`, synced and renamed to
//! `shard-<i>.log`, and the directory is synced. A crash leaves one of:
//! the old active file (nothing happened), sealed segments and no active
//! file (recovery creates one: [`create_active`]), or a leftover `.tmp`
//! (removed at start, as every `.tmp`).
//!
//! Recovery replays a shard's sealed segments in `seq` order, then its
//! active file, into one table. A sealed segment was synced before it was
//! sealed, so damage in it, even at its end, is corruption, never a torn
//! write to cut.
//!
//! A compaction's snapshot holds every live entry whatever file it points
//! into, and its file header is flagged BASE (`format::FLAG_BASE`): every
//! sealed segment older than a BASE is superseded. The compactor deletes them
//! once the BASE is the active file and the directory is synced; recovery
//! deletes those a crash left behind *before* replaying, since replaying them
//! would bring back keys deleted before the snapshot ([`superseded`]).
//!
//! The log engine never rolls: its shards keep one file each.

use super::format;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The default size past which the active file is sealed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// The smallest `--segment-bytes`: a block (`log::blocks`).
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;
/// The largest `--segment-bytes`.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 40;

/// Path of shard `shard`'s sealed segment `seq`.
pub fn sealed_path(log_dir: &Path, shard: usize, seq: u64) -> PathBuf {
    log_dir.join(format!("shard-{shard}.{seq:016x}.seg"))
}

/// The temporary file a roll writes the new active file to.
pub fn active_temp_path(active: &Path) -> PathBuf {
    active.with_extension("log.tmp")
}

/// Shard `shard`'s sealed segments in `log_dir`, oldest first: (seq, path).
pub fn list_sealed(log_dir: &Path, shard: usize) -> io::Result<Vec<(u64, PathBuf)>> {
    let prefix = format!("shard-{shard}.");
    let mut sealed = Vec::new();
    for entry in fs::read_dir(log_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let seq = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".seg"))
            .filter(|hex| hex.len() == 16)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        if let Some(seq) = seq {
            sealed.push((seq, entry.path()));
        }
    }
    sealed.sort();
    Ok(sealed)
}

/// Whether the log file at `path` is a BASE: its header says every older
/// sealed segment of its shard is superseded.
pub fn is_base(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let mut header = vec![0u8; format::FILE_HEADER_BYTES];
    let read = file.read_at(&mut header, 0)?;
    header.truncate(read);
    Ok(format::file_header_flags(&header) & format::FLAG_BASE != 0)
}

/// Of a shard's files in replay order (its sealed segments, then its active
/// file, last), the sealed segments that a newer BASE supersedes: to be
/// deleted before replay.
pub fn superseded(files: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    for (i, path) in files.iter().enumerate().rev() {
        if i > 0 && is_base(path)? {
            return Ok(files[..i].to_vec());
        }
    }
    Ok(Vec::new())
}

/// Deletes sealed segments (and their hints) a BASE superseded.
pub fn delete(paths: &[PathBuf]) -> io::Result<()> {
    for path in paths {
        super::hint::remove(path)?;
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The bytes a new active file starts with for logical position `at`: a
/// file header of `epoch` and, with the disk engine (`placed`), a PAD record
/// so that the first record lands at an offset equal to `at` modulo a block
/// (`log::blocks`: positions and file offsets agree modulo a block).
pub fn active_start(epoch: u64, at: u64, placed: bool) -> Vec<u8> {
    let mut out = Vec::new();
    format::write_file_header(&mut out, epoch);
    let pad = match placed {
        true => super::blocks::padding_to(out.len() as u64, at),
        false => 0,
    };
    if pad > 0 {
        let start = out.len();
        format::write_pad(&mut out, pad as usize);
        format::stamp(&mut out[start..], epoch);
    }
    out
}

/// Writes `start` as the new active file `active` (through its `.tmp`,
/// synced, renamed), checking `failpoint` before the rename (a crash there
/// leaves the `.tmp` and no active file).
pub fn create_active(
    active: &Path,
    start: &[u8],
    failpoint: (&str, Option<usize>),
) -> io::Result<()> {
    let temp = active_temp_path(active);
    let mut file = File::create(&temp)?;
    file.write_all(start)?;
    file.sync_all()?;
    drop(file);
    crate::failpoint::check(failpoint.0, failpoint.1)?;
    fs::rename(&temp, active)
}

/// Syncs the directory holding `path`.
pub fn sync_dir_of(path: &Path) -> io::Result<()> {
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Seals the active file `active` (its records end at `len`; `sync` makes
/// them durable) as sealed segment `sealed`, then creates the new active
/// file holding `start` and syncs the directory. Each step checks its
/// failpoint (for `shard`), so tests can stop a roll after any of them.
pub async fn roll(
    active: &Path,
    sealed: &Path,
    start: &[u8],
    shard: usize,
    sync: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let scope = Some(shard);
    crate::failpoint::check("segment::sync", scope)?;
    sync.await?;
    crate::failpoint::check("segment::rename", scope)?;
    let hint = super::hint::hint_path(active);
    if hint.exists() {
        fs::rename(&hint, super::hint::hint_path(sealed))?;
    }
    fs::rename(active, sealed)?;
    create_active(active, start, ("segment::create", scope))?;
    crate::failpoint::check("segment::dir_fsync", scope)?;
    sync_dir_of(active)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_segments_are_listed_oldest_first_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in [
            "shard-0.0000000000000002.seg",
            "shard-0.000000000000000a.seg",
            "shard-0.0000000000000001.seg",
            "shard-1.0000000000000000.seg",
            "shard-0.0000000000000001.hint",
            "shard-0.log",
            "shard-0.01.seg",
        ] {
            fs::write(dir.path().join(name), b"").expect("write");
        }
        let seqs: Vec<u64> = list_sealed(dir.path(), 0)
            .expect("list")
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, [1, 2, 10]);
        assert_eq!(
            sealed_path(dir.path(), 0, 10),
            dir.path().join("shard-0.000000000000000a.seg")
        );
    }

    #[test]
    fn the_sealed_segments_before_the_newest_base_are_superseded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = |name: &str, flags: u32| {
            let mut bytes = Vec::new();
            format::write_file_header_flagged(&mut bytes, 1, flags);
            let path = dir.path().join(name);
            fs::write(&path, bytes).expect("write");
            path
        };
        let (base, plain) = (format::FLAG_BASE, 0);
        let files = [
            file("a.seg", base),
            file("b.seg", plain),
            file("c.seg", base),
            file("d.seg", plain),
            file("shard-0.log", plain),
        ];
        let superseded = superseded(&files).expect("headers");
        assert_eq!(superseded, files[..2].to_vec());
        let files = [file("e.seg", plain), file("active.log", base)];
        assert_eq!(superseded_of(&files), files[..1].to_vec());
        let files = [file("f.seg", base), file("g.log", plain)];
        assert!(
            superseded_of(&files).is_empty(),
            "a BASE first supersedes nothing"
        );
    }

    #[test]
    fn a_base_header_is_a_valid_header_of_its_epoch_and_old_headers_are_not_bases() {
        let mut base = Vec::new();
        format::write_file_header_flagged(&mut base, 42, format::FLAG_BASE);
        let mut old = Vec::new();
        format::write_file_header(&mut old, 42);
        for header in [&base, &old] {
            assert_eq!(
                format::read_file_header(header),
                format::FileStart::Header(format::Framing::Epoch(42))
            );
        }
        assert_eq!(format::file_header_flags(&base), format::FLAG_BASE);
        assert_eq!(format::file_header_flags(&old), 0);
        assert_eq!(format::file_header_flags(b"legacy bytes"), 0);
    }

    fn superseded_of(files: &[PathBuf]) -> Vec<PathBuf> {
        superseded(files).expect("headers")
    }

    #[test]
    fn a_new_active_file_puts_its_first_record_where_positions_say_modulo_a_block() {
        for at in [0, 32, 45, 4096 + 40, 8191, 12_345] {
            let start = active_start(7, at, true);
            assert_eq!(start.len() as u64 % 4096, at % 4096, "at {at}");
            let (_, records, end) = format::parse_file(&start).expect("a valid file");
            assert!(records.iter().all(|(_, r)| *r == format::Record::Pad));
            assert_eq!(end, start.len());
        }
        assert_eq!(
            active_start(7, 12_345, false).len(),
            format::FILE_HEADER_BYTES
        );
    }
}
