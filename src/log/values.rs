//! The disk engine's value reads: which of a shard's log files holds a
//! value's bytes, and reading them with direct I/O through io_uring.
//!
//! A disk engine's table keeps, per key, where its value is
//! ([`Location`]: a file number, an offset, a length, how it is checked)
//! instead of the value (`crate::entry`). The shard's active log file is
//! file `n` (recovery numbers every file of every shard, sealed segments
//! first, uniquely: `log::recover`); each compaction switches to file
//! `n + 1`, which holds a snapshot of every live value and, behind it, the
//! records appended since the snapshot was taken (the *tail*), copied as
//! they were (`log::compaction`).
//!
//! A roll (`log::segments`) *seals* the active file: it stays open for
//! reads under its number, read as it is (a sealed file's bytes never move),
//! and the new active file takes the next number. A compaction's snapshot
//! supersedes every sealed file: they are retired with the active one, and
//! closed by the same rule.
//!
//! After a switch the table's entries are moved to the new file
//! ([`crate::table::Table::relocate`]) in steps, while requests run, so for a
//! while some still point into the old one. The old file is *retired*, not
//! closed:
//! - a location in its tail resolves to the same bytes in the new file (the
//!   tail moved as one block, by a fixed shift), so the old file's tail is
//!   never read again;
//! - a location before its tail is read from the old file, which stays open
//!   (unlinked: its space is freed when it closes) until no entry can point
//!   into it: one more switch has happened, whose snapshot held every entry
//!   the table had, and no entry outside the table — a reply's, an undo
//!   log's — points into it ([`ValueFiles::close_unreferenced`]).
//!
//! Reads use `O_DIRECT` (glommio's `DmaFile`; tmpfs, which has no direct
//! I/O, is read through its page cache): the values are meant to be many
//! times the machine's memory, and the page cache would only hold the hot
//! ones at the cost of evicting everything else on the machine. On a
//! server they go through the shard's own ring ([`BlockReader`]), not
//! glommio's.
//!
//! Except the bytes of the active file not yet synced ([`ReadHandle`]):
//! those are dirty pages in the page cache by definition, and a direct read
//! of them makes the kernel write them back first and wait for it, holding
//! the file's lock, so the shard's next append waited behind the read (10 ms
//! and more, on a disk busy with a merge). They are read through the log
//! writer's buffered handle of the file: a copy from memory.
//!
//! Every read is checked ([`WantedValue`]): a value alone in its PUT or PUTX
//! record is read with the whole record, which must be its key's at its
//! entry's version; a value among several in a record, against the CRC-32
//! its entry keeps.

use super::{blocks, format};
use crate::entry::{Entry, Location, ValueCheck};
use glommio::io::{BufferedFile, DmaFile, ReadResult};
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;

/// A file a compaction replaced, kept open while entries may point into it.
struct Retired {
    number: u32,
    file: Rc<DmaFile>,
    /// Offsets from here on (the tail) moved to `moved_to`, `shift` bytes on.
    tail_from: u64,
    moved_to: u32,
    shift: i64,
    /// The switch count when it was retired: it may close after a later one.
    retired_at_switch: u64,
    /// Retired by a merge (`log::merge`), which moved every table entry
    /// pointing into it: it closes as soon as nothing else points into it.
    merged: bool,
}

/// Where a shard's values are: its current log file, its sealed segments
/// and the retired files.
pub struct ValueFiles {
    number: u32,
    current: Rc<DmaFile>,
    /// Sealed segments (`log::segments`), oldest first, with their numbers.
    sealed: Vec<(u32, Rc<DmaFile>)>,
    retired: Vec<Retired>,
    switches: u64,
    /// The number the next new file gets: above every number in use, so a
    /// merge's output and a roll's new file never share one.
    next_free: u32,
}

impl ValueFiles {
    /// Reads from `current`, the log file entries call `number`.
    pub fn new(number: u32, current: DmaFile) -> ValueFiles {
        ValueFiles {
            number,
            current: Rc::new(current),
            sealed: Vec::new(),
            retired: Vec::new(),
            switches: 0,
            next_free: number.wrapping_add(1),
        }
    }

    /// As [`ValueFiles::new`], with the shard's sealed segments (oldest
    /// first, with the numbers their entries carry).
    pub fn with_sealed(number: u32, current: DmaFile, sealed: Vec<(u32, DmaFile)>) -> ValueFiles {
        let highest = sealed.iter().map(|(n, _)| *n).fold(number, u32::max);
        ValueFiles {
            sealed: sealed.into_iter().map(|(n, f)| (n, Rc::new(f))).collect(),
            next_free: highest.wrapping_add(1),
            ..ValueFiles::new(number, current)
        }
    }

    /// A roll sealed the current file; `new` (numbered
    /// [`ValueFiles::next_number`]) is the active file from now on. The sealed
    /// file is read where it is: its bytes do not move.
    pub fn seal(&mut self, new: DmaFile) {
        let old = std::mem::replace(&mut self.current, Rc::new(new));
        self.sealed.push((self.number, old));
        self.number = self.take_number();
    }

    /// The numbers of the sealed segments, oldest first.
    pub fn sealed_numbers(&self) -> Vec<u32> {
        self.sealed.iter().map(|(n, _)| *n).collect()
    }

    /// A merge (`log::merge`) replaced the sealed segments `inputs` with
    /// `output`, which takes the place of the newest of them among the
    /// sealed segments under a new number (returned). The inputs are
    /// retired, read where they are until nothing points into them.
    /// With no output (nothing of the inputs was still needed) they are
    /// only retired.
    pub fn merged(&mut self, inputs: &[u32], output: Option<DmaFile>) -> Option<u32> {
        let newest = self.sealed.iter().rposition(|(n, _)| inputs.contains(n));
        let number = output.map(|output| {
            let number = self.take_number();
            let at = newest.map_or(self.sealed.len(), |at| at + 1);
            self.sealed.insert(at, (number, Rc::new(output)));
            number
        });
        let (gone, kept) = std::mem::take(&mut self.sealed)
            .into_iter()
            .partition(|(n, _)| inputs.contains(n));
        self.sealed = kept;
        for (number, file) in gone {
            self.retired.push(Retired {
                number,
                file,
                tail_from: u64::MAX,
                moved_to: number,
                shift: 0,
                retired_at_switch: self.switches,
                merged: true,
            });
        }
        number
    }

    /// A number no file of this shard has, for a new file.
    fn take_number(&mut self) -> u32 {
        let number = self.next_free;
        self.next_free = self.next_free.wrapping_add(1);
        number
    }

    /// The number of the current log file: where new values are written.
    pub fn current_number(&self) -> u32 {
        self.number
    }

    /// The number the next file (after a compaction or a roll) gets.
    pub fn next_number(&self) -> u32 {
        self.next_free
    }

    /// Compaction switched to `new` (numbered [`ValueFiles::next_number`]),
    /// where the old file's bytes from `tail_from` on now start at `tail_to`.
    pub fn switch(&mut self, new: DmaFile, tail_from: u64, tail_to: u64) {
        let old = std::mem::replace(&mut self.current, Rc::new(new));
        let moved_to = self.take_number();
        self.switches += 1;
        // The snapshot holds every entry of the sealed segments too: they
        // are retired with the active file, read where they are until closed.
        for (number, file) in self.sealed.drain(..) {
            self.retired.push(Retired {
                number,
                file,
                tail_from: u64::MAX,
                moved_to,
                shift: 0,
                retired_at_switch: self.switches,
                merged: false,
            });
        }
        self.retired.push(Retired {
            number: self.number,
            file: old,
            tail_from,
            moved_to,
            shift: tail_to as i64 - tail_from as i64,
            retired_at_switch: self.switches,
            merged: false,
        });
        self.number = moved_to;
    }

    /// Whether `file` is the active file's.
    pub fn is_current(&self, file: &Rc<DmaFile>) -> bool {
        Rc::ptr_eq(file, &self.current)
    }

    /// Where the bytes of `location` are now: the file and the offset in it.
    fn resolve(&self, mut location: Location) -> Option<(Rc<DmaFile>, u64)> {
        // Each step moves to a later file, of which there are few.
        for _ in 0..=self.retired.len() {
            if location.file == self.number {
                return Some((self.current.clone(), location.offset));
            }
            if let Some((_, file)) = self.sealed.iter().find(|(n, _)| *n == location.file) {
                return Some((file.clone(), location.offset));
            }
            let retired = self.retired.iter().find(|r| r.number == location.file)?;
            if location.offset < retired.tail_from {
                return Some((retired.file.clone(), location.offset));
            }
            location.file = retired.moved_to;
            location.offset = (location.offset as i64 + retired.shift) as u64;
        }
        None
    }

    /// The file and offset to read `location` at, or why there is none.
    pub fn locate(&self, location: Location) -> io::Result<(Rc<DmaFile>, u64)> {
        self.resolve(location).ok_or_else(|| {
            io::Error::other(format!(
                "log file {} of this shard is closed (a value of it was still wanted)",
                location.file
            ))
        })
    }

    /// The file and offset of `len` bytes from `offset` of file `file`, if
    /// they lie in one file in one piece (a span across the point where a
    /// retired file's tail was moved to its successor does not).
    pub fn locate_span(&self, file: u32, offset: u64, len: u64) -> Option<(Rc<DmaFile>, u64)> {
        let at = |offset| {
            self.resolve(Location {
                file,
                offset,
                len: 0,
                check: ValueCheck::Crc(0),
            })
        };
        let (first, start) = at(offset)?;
        let (last, end) = at(offset + len.max(1) - 1)?;
        (Rc::ptr_eq(&first, &last) && end - start == len.max(1) - 1).then_some((first, start))
    }

    /// Closes the retired files that no entry can point into any more: a
    /// switch has happened since each was retired (its snapshot moved every
    /// entry the table had), or a merge retired it (it moved every table
    /// entry pointing into it), and `referenced` says no other entry does.
    /// Returns how many it closed.
    pub fn close_unreferenced(&mut self, referenced: impl Fn(u32) -> bool) -> usize {
        let switches = self.switches;
        let before = self.retired.len();
        self.retired
            .retain(|r| (!r.merged && r.retired_at_switch >= switches) || referenced(r.number));
        before - self.retired.len()
    }

    /// Numbers of the retired files still open.
    pub fn retired_numbers(&self) -> Vec<u32> {
        self.retired.iter().map(|r| r.number).collect()
    }
}

/// An on-disk value to read: the key and version of the entry pointing at
/// it, and where it is. A value that is the only one of its PUT or PUTX
/// record ([`ValueCheck::Record`]) is read with the whole record, which is
/// then checked as that key's record at that version
/// (`format::check_put_record`): besides damage to the value, this catches
/// damage to the record's header, key or version, and a location pointing
/// at the wrong record. A value inside a multi-value record is read alone
/// and checked against the CRC-32 its entry keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedValue<'a> {
    pub key: &'a [u8],
    pub version: u64,
    pub location: Location,
}

impl<'a> WantedValue<'a> {
    /// The on-disk value of `entry`, if its value is on disk.
    pub fn of(entry: &'a Entry) -> Option<WantedValue<'a>> {
        Some(WantedValue {
            key: entry.key(),
            version: entry.version(),
            location: entry.location()?,
        })
    }

    /// How many bytes before the value a read of it starts: its record's
    /// start, or the value itself.
    pub fn lead(&self) -> u64 {
        match self.location.check {
            ValueCheck::Record { .. } => format::put_value_offset(self.key.len()) as u64,
            ValueCheck::Crc(_) => 0,
        }
    }

    /// Where a read of it starts, in `location.file`.
    pub fn read_start(&self) -> u64 {
        self.location.offset.saturating_sub(self.lead())
    }

    /// How many bytes a read of it covers.
    pub fn read_len(&self) -> usize {
        match self.location.check {
            ValueCheck::Record { with_deadline } => {
                format::put_record_bytes(self.key.len(), self.location.len as usize, with_deadline)
            }
            ValueCheck::Crc(_) => self.location.len as usize,
        }
    }

    /// Where a read of it ends, in `location.file`.
    pub fn read_end(&self) -> u64 {
        self.read_start() + self.read_len() as u64
    }

    /// Checks that `read`, the [`WantedValue::read_len`] bytes from
    /// [`WantedValue::read_start`], hold this value, and returns its bytes:
    /// damage on disk (or a location pointing at the wrong bytes) is an
    /// error naming where, never a wrong value.
    pub fn check<'r>(&self, read: &'r [u8]) -> io::Result<&'r [u8]> {
        let Location {
            file, offset, len, ..
        } = self.location;
        let checked = match self.location.check {
            ValueCheck::Record { with_deadline } => {
                format::check_put_record(read, self.key, self.version, len as usize, with_deadline)
            }
            ValueCheck::Crc(crc) if read.len() == len as usize && crc32fast::hash(read) == crc => {
                Ok(read)
            }
            ValueCheck::Crc(_) => Err("they fail their checksum (damaged on disk)".into()),
        };
        checked.map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the {len} bytes of the value of {:?} at offset {offset} of log file {file}: {why}",
                    String::from_utf8_lossy(self.key)
                ),
            )
        })
    }
}

/// What a value's bytes are read through: the file's direct-I/O handle, or,
/// for bytes of the active file past its last sync, the log writer's own
/// buffered handle of the same file (the module doc says why).
pub enum ReadHandle {
    Direct(Rc<DmaFile>),
    Buffered(Rc<BufferedFile>),
}

impl ReadHandle {
    fn fd(&self) -> RawFd {
        match self {
            ReadHandle::Direct(file) => file.as_raw_fd(),
            ReadHandle::Buffered(file) => file.as_raw_fd(),
        }
    }

    /// What reads of it are aligned to: whole 4 KiB blocks at least.
    fn alignment(&self) -> u64 {
        match self {
            ReadHandle::Direct(file) => file.alignment().max(blocks::BLOCK_BYTES),
            ReadHandle::Buffered(_) => blocks::BLOCK_BYTES,
        }
    }
}

/// Reads whole blocks of a log file through the shard's own io_uring, the
/// one its sockets are polled on (`crate::net::ring`, given by the server:
/// [`super::LogWriter::read_through`]).
///
/// Why not glommio's: glommio submits a `DmaFile` read, and collects its
/// completion, only between runs of its task queues — when they are all
/// empty, or at its preemption (100 ms then). A shard serving many connections
/// seldom empties them, so a read waited on the executor as well as on the
/// device: 308–348 µs a read on average at 16 GETs in flight, against
/// 291–311 µs through the shard's ring (docs/benchmarks.md). A read on the
/// shard's own ring is submitted as soon as it is queued (210–241 µs: as
/// fio's at the same depth), and its completion is collected at the next
/// pass of the network poller, with the sockets'.
pub trait BlockReader {
    /// Reads `size` bytes at `offset` of the file `fd` (both multiples of
    /// `align`) into memory aligned to `align`; fewer bytes only where the
    /// file ends.
    fn read_blocks(
        &self,
        fd: RawFd,
        offset: u64,
        size: usize,
        align: usize,
    ) -> Pin<Box<dyn Future<Output = io::Result<BlockBuffer>>>>;
}

/// Blocks a [`BlockReader`] read: `buffer[range]`.
pub struct BlockBuffer {
    pub buffer: Vec<u8>,
    pub range: std::ops::Range<usize>,
}

/// Bytes read from a log file, by glommio or by a [`BlockReader`]: `len`
/// bytes from `from` of what the read brought.
pub struct ReadBytes {
    read: Blocks,
    from: usize,
    len: usize,
}

enum Blocks {
    Glommio(ReadResult),
    Ring(BlockBuffer),
}

impl Deref for ReadBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let blocks: &[u8] = match &self.read {
            Blocks::Glommio(read) => read,
            Blocks::Ring(BlockBuffer { buffer, range }) => &buffer[range.clone()],
        };
        &blocks[self.from..self.from + self.len]
    }
}

/// Reads `len` bytes at `offset` of `file`, through `ring` if there is one
/// (else through glommio); a short read (the file ends early: a bug, or the
/// file was cut) is an error, never a short value.
///
/// The read covers the whole 4 KiB blocks holding the bytes
/// ([`blocks::covering`]), whatever the device's own (often 512-byte)
/// sectors: a value of a record of at most 4 KiB, which the disk engine
/// keeps within one block (`log::blocks`), costs exactly one page-sized,
/// page-aligned read.
pub async fn read_exact(
    file: &ReadHandle,
    offset: u64,
    len: usize,
    ring: Option<&dyn BlockReader>,
) -> io::Result<ReadBytes> {
    let (start, size) = blocks::covering(offset, len as u64);
    let read = match (ring, file) {
        (Some(ring), file) => {
            let align = file.alignment() as usize;
            Blocks::Ring(
                ring.read_blocks(file.fd(), start, size as usize, align)
                    .await?,
            )
        }
        (None, ReadHandle::Direct(file)) => Blocks::Glommio(
            file.read_at(start, size as usize)
                .await
                .map_err(io::Error::from)?,
        ),
        (None, ReadHandle::Buffered(file)) => Blocks::Glommio(
            file.read_at(start, size as usize)
                .await
                .map_err(io::Error::from)?,
        ),
    };
    let read_len = match &read {
        Blocks::Glommio(read) => read.len(),
        Blocks::Ring(BlockBuffer { range, .. }) => range.len(),
    };
    let from = (offset - start) as usize;
    match read_len >= from + len {
        true => Ok(ReadBytes { read, from, len }),
        false => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "read {} of {len} bytes at offset {offset} of a log file",
                read_len.saturating_sub(from)
            ),
        )),
    }
}

/// Reads `len` bytes at `offset` of `file` with a blocking `pread`, on the
/// calling thread: for the rare request whose value changed between its
/// read through io_uring and its turn on the key, which must be used with no
/// await (`shard::values`). A file opened for direct I/O needs whole
/// aligned blocks read into an aligned buffer; so every read is made so.
pub fn read_blocking(file: &ReadHandle, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    // Whole 4 KiB blocks, as `read_exact` reads.
    let align = file.alignment();
    let start = offset / align * align;
    let end = (offset + len as u64).div_ceil(align) * align;
    let size = (end - start) as usize;
    let mut raw = vec![0u8; size + align as usize];
    let shift = raw.as_ptr().align_offset(align as usize);
    let buf = &mut raw[shift..shift + size];
    let mut done = 0;
    while done < size {
        match crate::sys::pread(file.fd(), &mut buf[done..], start + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let wanted = (offset - start) as usize..(offset - start) as usize + len;
    match buf.get(wanted) {
        Some(value) if done >= wanted_end(offset - start, len) => Ok(value.to_vec()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the log file ends before {len} bytes at offset {offset}"),
        )),
    }
}

fn wanted_end(from: u64, len: usize) -> usize {
    from as usize + len
}

/// Runs `futures` together on this executor (their I/O is in flight at
/// once) and returns their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(done) => *output = Some(done),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        match pending {
            true => std::task::Poll::Pending,
            false => std::task::Poll::Ready(()),
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future completed"))
        .collect()
}
