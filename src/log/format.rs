//! The on-disk format of a shard's log. Pure encoding and decoding: no I/O here.
//!
//! A log file is a file header followed by a sequence of checksummed records:
//!
//! ```text
//! file header (32 bytes, at offset 0)
//! +-----------------+------------+-------------+-------------+-----------+------------+
//! | magic: 8 bytes  | version u32| flags u32   | epoch: u64  | reserved  | crc: u32   |
//! | "corekvLG"      | = 2        | BASE = 1    | random      | u32 = 0   | of 0..28   |
//! +-----------------+------------+-------------+-------------+-----------+------------+
//!
//! record
//! +--------------+-------------------+-------------------+----------------------+
//! | len: u32     | body_crc: u32     | head_crc: u32     | body: `len` bytes    |
//! +--------------+-------------------+-------------------+----------------------+
//!   body_crc = CRC-32 (IEEE) of body
//!   head_crc = CRC-32 of (epoch u64 | len u32 | body_crc u32), the file's epoch
//!
//! body = kind: u8, then by kind:
//!   1 PUT      key_len u32 | key | version u64 | value_len u32 | value (raw msgpack)
//!   2 DEL      key_len u32 | key
//!   3 BATCH    n u32 | n × (PUT or DEL body)           a single-shard ATOMIC
//!   4 PREPARE  txn | n u32 | n × (PUT or DEL body)     a participant's share
//!   5 DECIDE   txn | commit u8                         the participant heard the decision
//!   6 COMMIT   txn                                      the coordinator's commit point
//!   7 PUTX     PUT body | deadline u64                  a write that expires (format 2)
//!   8 EXPIRE   key_len u32 | key | deadline u64        a new deadline (format 2)
//!   9 PERSIST  key_len u32 | key                       the deadline removed (format 2)
//!  10 PAD      zeros                                   fills the rest of a 4 KiB block
//!   txn = coordinator shard u32 | seq u64
//!   deadline = Unix milliseconds
//! ```
//!
//! BATCH and PREPARE hold PUT, DEL, PUTX, EXPIRE and PERSIST bodies. A write
//! without a deadline is a PUT, byte for byte as in format 1, so a log of a
//! server that never used expiry reads the same in either format.
//!
//! All integers little-endian. A BATCH or PREPARE is one record with one
//! checksum, so it is on disk entirely or not at all.
//!
//! A PAD record holds nothing: the disk engine writes one where the next
//! record would cross a 4 KiB boundary of the file, so that a small value is
//! one aligned block to read (`log::blocks`). Readers skip it; it is framed
//! and checksummed like any record, so torn tails and damage are found in it
//! as anywhere else.
//!
//! # Why two checksums and an epoch
//!
//! Every file gets a fresh random *epoch* when it is created, and every record's
//! header checksum covers it. Two things follow:
//! - **Client bytes are never taken for a record.** A value may contain any
//!   bytes, including a perfect image of a record; but a client never learns a
//!   file's epoch, so the image's header checksum does not match. When recovery
//!   looks for intact records after damage (to tell a torn tail from corruption
//!   in the middle), it only accepts headers checksummed with this file's epoch.
//! - **Checking a header costs the same wherever it is.** `head_crc` covers 16
//!   bytes, so testing whether an offset holds a record is O(1); only a valid
//!   header's body is checksummed. Scanning damage is linear in its length,
//!   whatever the bytes (see `log::replay`).
//!
//! It also means a record written for one file is not valid in another (a
//! recycled or older file's records never pass as this file's).
//!
//! Records are encoded *unstamped* (`head_crc` zero) by the `write_*`
//! functions, because the file they will land in is chosen only when they are
//! written (compaction may switch files in between); [`stamp`] fills in the
//! header checksums for a file's epoch just before the write.
//!
//! Files written by corekv 0.1 have no file header and 8-byte record headers
//! (`len | body_crc`): [`Framing::Legacy`]. They are read (to upgrade them, see
//! `log::recover`) but never written.
//!
//! [`decode_at`] tells a complete record from a short or damaged one; whether
//! damage is a torn tail or corruption in the middle is decided by the caller
//! (`log::replay`), which looks past it.

use crate::ids::{ShardId, TxnId};

/// Bytes of a file header.
pub const FILE_HEADER_BYTES: usize = 32;
/// Bytes of a record's frame before its body.
pub const HEADER_BYTES: usize = 12;
/// Bytes of a legacy (corekv 0.1) record's frame before its body.
pub const LEGACY_HEADER_BYTES: usize = 8;
/// A legacy record body longer than this is damage: no frame was this large.
pub const LEGACY_MAX_BODY_BYTES: u32 = u32::MAX / 2;
/// The format this build writes: 2 added the expiry records (PUTX, EXPIRE,
/// PERSIST).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format with a file header, which this build still reads (it
/// has no expiry records).
pub const FIRST_HEADER_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"corekvLG";

const KIND_PUT: u8 = 1;
const KIND_DEL: u8 = 2;
const KIND_BATCH: u8 = 3;
const KIND_PREPARE: u8 = 4;
const KIND_DECIDE: u8 = 5;
const KIND_COMMIT: u8 = 6;
const KIND_PUTX: u8 = 7;
const KIND_EXPIRE: u8 = 8;
const KIND_PERSIST: u8 = 9;
const KIND_PAD: u8 = 10;

/// Bytes of the smallest PAD record: a header and the kind byte.
pub const MIN_PAD_BYTES: usize = HEADER_BYTES + 1;

/// How the records of one file are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A file with a header: 12-byte record headers checksummed with `epoch`.
    Epoch(u64),
    /// A corekv 0.1 file: no file header, 8-byte record headers.
    Legacy,
}

impl Framing {
    /// Bytes of a record header under this framing.
    pub fn header_bytes(self) -> usize {
        match self {
            Framing::Epoch(_) => HEADER_BYTES,
            Framing::Legacy => LEGACY_HEADER_BYTES,
        }
    }

    /// Where the first record starts.
    pub fn records_start(self) -> usize {
        match self {
            Framing::Epoch(_) => FILE_HEADER_BYTES,
            Framing::Legacy => 0,
        }
    }
}

/// What the first bytes of a log file say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStart {
    /// A valid header: the file's framing.
    Header(Framing),
    /// No header: a corekv 0.1 log (or an empty file).
    Legacy,
    /// The header is there but damaged, or from an unknown version.
    Bad(String),
}

/// The file header's flag of a snapshot (compaction, backup, a rewritten
/// set): every sealed segment older than it is superseded (`log::segments`).
/// Files written before flags existed have 0 there, and readers that do not
/// know a flag ignore it.
pub const FLAG_BASE: u32 = 1;

/// Appends a file header for `epoch`.
pub fn write_file_header(out: &mut Vec<u8>, epoch: u64) {
    write_file_header_flagged(out, epoch, 0);
}

/// Appends a file header for `epoch` with `flags` (see [`FLAG_BASE`]).
pub fn write_file_header_flagged(out: &mut Vec<u8>, epoch: u64, flags: u32) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, FILE_HEADER_BYTES);
}

/// Reads the file header at the start of `file` (which holds the first
/// [`FILE_HEADER_BYTES`] of the file, or all of it if shorter).
pub fn read_file_header(file: &[u8]) -> FileStart {
    if !file.is_empty() && file.len() < MAGIC.len() && MAGIC.starts_with(file) {
        return FileStart::Bad("the file header is cut short".into());
    }
    if !file.starts_with(MAGIC) {
        return FileStart::Legacy;
    }
    let Some(header) = file.get(..FILE_HEADER_BYTES) else {
        return FileStart::Bad("the file header is cut short".into());
    };
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[..28]) != word(28) {
        return FileStart::Bad("the file header's checksum does not match".into());
    }
    match word(8) {
        FIRST_HEADER_VERSION..=FORMAT_VERSION => {
            let epoch = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
            FileStart::Header(Framing::Epoch(epoch))
        }
        version => FileStart::Bad(format!(
            "log format version {version}, but this corekv reads versions up to {FORMAT_VERSION} \
             (written by a newer corekv?)"
        )),
    }
}

/// The flags of a valid file header at the start of `file`; 0 for a file
/// without one (a corekv 0.1 log) or a damaged one.
pub fn file_header_flags(file: &[u8]) -> u32 {
    match read_file_header(file) {
        FileStart::Header(_) => u32::from_le_bytes(file[12..16].try_into().expect("4 bytes")),
        FileStart::Legacy | FileStart::Bad(_) => 0,
    }
}

/// One change to one key, as a request made it: what PUT and DEL records
/// (alone, or inside a BATCH or PREPARE) hold.
pub use crate::table::Effect;

/// A decoded record; byte fields borrow from the file buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Effect(Effect<'a>),
    Batch(Vec<Effect<'a>>),
    Prepare {
        txn: TxnId,
        effects: Vec<Effect<'a>>,
    },
    Decide {
        txn: TxnId,
        commit: bool,
    },
    Commit {
        txn: TxnId,
    },
    /// Filler before a record that would cross a block boundary: no data.
    Pad,
}

impl Record<'_> {
    /// The cross-shard batch the record belongs to, if any.
    pub fn txn(&self) -> Option<TxnId> {
        match self {
            Record::Prepare { txn, .. } | Record::Decide { txn, .. } | Record::Commit { txn } => {
                Some(*txn)
            }
            Record::Effect(_) | Record::Batch(_) | Record::Pad => None,
        }
    }
}

/// What is at an offset of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete, intact record and the offset just past it.
    Record(Record<'a>, usize),
    /// The file ends inside the header or body of a record, or in zero padding.
    Incomplete,
    /// The frame is complete but its checksum or contents are wrong.
    Damaged(String),
}

/// Appends the record of a write or delete.
pub fn write_effect(out: &mut Vec<u8>, effect: &Effect<'_>) {
    write_effect_locating(out, effect);
}

/// As [`write_effect`]; returns where in `out` a PUT's value bytes start
/// (the disk engine points the key's index entry there once written).
pub fn write_effect_locating(out: &mut Vec<u8>, effect: &Effect<'_>) -> Option<usize> {
    let mut value_at = None;
    frame(out, |body| value_at = effect_body(body, effect));
    value_at
}

/// Appends a single-shard ATOMIC's effects as one record.
pub fn write_batch(out: &mut Vec<u8>, effects: &[Effect<'_>]) {
    write_batch_locating(out, effects, &mut |_, _| {});
}

/// As [`write_batch`]; tells `located` each PUT's index among `effects` and
/// where in `out` its value bytes start.
pub fn write_batch_locating(
    out: &mut Vec<u8>,
    effects: &[Effect<'_>],
    located: &mut dyn FnMut(usize, usize),
) {
    frame(out, |body| {
        body.push(KIND_BATCH);
        effects_body(body, effects, located);
    });
}

/// Appends a participant's prepared share of a cross-shard batch.
pub fn write_prepare(out: &mut Vec<u8>, txn: TxnId, effects: &[Effect<'_>]) {
    write_prepare_locating(out, txn, effects, &mut |_, _| {});
}

/// As [`write_prepare`]; tells `located` each PUT's index among `effects`
/// and where in `out` its value bytes start.
pub fn write_prepare_locating(
    out: &mut Vec<u8>,
    txn: TxnId,
    effects: &[Effect<'_>],
    located: &mut dyn FnMut(usize, usize),
) {
    frame(out, |body| {
        body.push(KIND_PREPARE);
        txn_body(body, txn);
        effects_body(body, effects, located);
    });
}

/// Appends a participant's record of a decision.
pub fn write_decide(out: &mut Vec<u8>, txn: TxnId, commit: bool) {
    frame(out, |body| {
        body.push(KIND_DECIDE);
        txn_body(body, txn);
        body.push(u8::from(commit));
    });
}

/// Appends the coordinator's commit point of a cross-shard batch.
pub fn write_commit(out: &mut Vec<u8>, txn: TxnId) {
    frame(out, |body| {
        body.push(KIND_COMMIT);
        txn_body(body, txn);
    });
}

/// Appends a PAD record of `bytes` bytes in all, header included (at least
/// [`MIN_PAD_BYTES`]).
pub fn write_pad(out: &mut Vec<u8>, bytes: usize) {
    assert!(
        bytes >= MIN_PAD_BYTES,
        "a PAD record of {bytes} bytes cannot hold its header and kind"
    );
    frame(out, |body| {
        body.push(KIND_PAD);
        body.resize(body.len() + bytes - MIN_PAD_BYTES, 0);
    });
}

/// Writes an unstamped header + body, filling in the length and body checksum
/// after the body; [`stamp`] adds the header checksum.
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    body(out);
    let body_bytes = &out[start + HEADER_BYTES..];
    let len = u32::try_from(body_bytes.len()).expect("a record body fits the frame limit, < 4 GiB");
    let crc = crc32fast::hash(body_bytes);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The header checksum of a record of `len` bytes whose body checksums to
/// `body_crc`, in the file of `epoch`.
fn head_crc(epoch: u64, len: u32, body_crc: u32) -> u32 {
    let mut input = [0u8; 16];
    input[..8].copy_from_slice(&epoch.to_le_bytes());
    input[8..12].copy_from_slice(&len.to_le_bytes());
    input[12..].copy_from_slice(&body_crc.to_le_bytes());
    crc32fast::hash(&input)
}

/// Fills in the header checksum of every record in `records` (whole records,
/// as the `write_*` functions made them) for the file of `epoch`. Records
/// already stamped for another file are re-stamped. Returns how many records
/// there are, PAD records not counted.
pub fn stamp(records: &mut [u8], epoch: u64) -> u64 {
    let (mut at, mut nr_records) = (0, 0);
    while at < records.len() {
        nr_records += u64::from(records.get(at + HEADER_BYTES) != Some(&KIND_PAD));
        let header = &mut records[at..at + HEADER_BYTES];
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let body_crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        header[8..12].copy_from_slice(&head_crc(epoch, len, body_crc).to_le_bytes());
        at += HEADER_BYTES + len as usize;
    }
    debug_assert_eq!(at, records.len(), "stamp() was given a partial record");
    nr_records
}

/// How many bytes at the start of `window` form the next chunk of whole
/// records to copy, `window` being the first bytes of a run of whole records
/// (stamped or not): every record that fits in it whole, or, if the first
/// one alone is longer than `window`, that record's length, which is more
/// than `window.len()` (the caller fetches it whole: a record is never
/// split). None if `window` does not start with a record header.
///
/// Compaction's switch copies a log's tail in windows of a few MiB with it,
/// so its memory does not grow with the tail (`log::tail_copy`).
pub fn chunk_len(window: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(header) = window.get(at..at + HEADER_BYTES) {
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let end = at + HEADER_BYTES + len as usize;
        if len == 0 || end > window.len() {
            // A first record longer than the window is a chunk by itself; a
            // zero length is no record (a frame always holds its kind byte).
            if at == 0 && len > 0 {
                return Some(end);
            }
            break;
        }
        at = end;
    }
    (at > 0).then_some(at)
}

/// Appends an effect's body; returns where in `body` a PUT's value starts.
fn effect_body(body: &mut Vec<u8>, effect: &Effect<'_>) -> Option<usize> {
    match effect {
        Effect::Put {
            key,
            version,
            value,
            deadline,
        } => {
            body.push(match deadline {
                None => KIND_PUT,
                Some(_) => KIND_PUTX,
            });
            bytes_field(body, key);
            body.extend_from_slice(&version.to_le_bytes());
            bytes_field(body, value);
            let value_at = body.len() - value.len();
            if let Some(deadline) = deadline {
                body.extend_from_slice(&deadline.to_le_bytes());
            }
            Some(value_at)
        }
        Effect::Del { key } => {
            body.push(KIND_DEL);
            bytes_field(body, key);
            None
        }
        Effect::Expire { key, deadline } => {
            body.push(match deadline {
                Some(_) => KIND_EXPIRE,
                None => KIND_PERSIST,
            });
            bytes_field(body, key);
            if let Some(deadline) = deadline {
                body.extend_from_slice(&deadline.to_le_bytes());
            }
            None
        }
    }
}

/// The effects' count and each effect; `located` is told each PUT's index
/// and where its value bytes start.
fn effects_body(body: &mut Vec<u8>, effects: &[Effect<'_>], located: &mut dyn FnMut(usize, usize)) {
    body.extend_from_slice(&(effects.len() as u32).to_le_bytes());
    for (i, effect) in effects.iter().enumerate() {
        if let Some(value_at) = effect_body(body, effect) {
            located(i, value_at);
        }
    }
}

fn txn_body(body: &mut Vec<u8>, txn: TxnId) {
    body.extend_from_slice(&(txn.coordinator.0 as u32).to_le_bytes());
    body.extend_from_slice(&txn.seq.to_le_bytes());
}

fn bytes_field(body: &mut Vec<u8>, bytes: &[u8]) {
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
}

/// The body length in a record header at the start of `rest`, if the header
/// is complete and valid under `framing`: for a file with an epoch, its header
/// checksum matches; for a legacy file, the length is plausible.
pub fn valid_header_len(rest: &[u8], framing: Framing) -> Option<u32> {
    let header = rest.get(..framing.header_bytes())?;
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let len = word(0);
    match framing {
        Framing::Epoch(epoch) => {
            (len > 0 && head_crc(epoch, len, word(4)) == word(8)).then_some(len)
        }
        Framing::Legacy => (len > 0 && len <= LEGACY_MAX_BODY_BYTES).then_some(len),
    }
}

/// How many bytes the record at the start of `rest` spans, header included, as
/// far as its header tells: the header size while the header is incomplete or
/// invalid. A reader that holds this many bytes (or the rest of the file, if
/// shorter) gets the same answer from [`decode_at`] as one that holds the whole
/// file.
pub fn frame_bytes(rest: &[u8], framing: Framing) -> usize {
    let header = framing.header_bytes();
    valid_header_len(rest, framing).map_or(header, |len| header + len as usize)
}

/// Decodes the record at `offset` of `file`.
pub fn decode_at(file: &[u8], offset: usize, framing: Framing) -> Decoded<'_> {
    let rest = &file[offset..];
    let header = framing.header_bytes();
    if rest.len() < header {
        return Decoded::Incomplete;
    }
    if rest[..header].iter().all(|&b| b == 0) {
        return Decoded::Incomplete; // zero padding: a preallocated or torn tail
    }
    let Some(len) = valid_header_len(rest, framing) else {
        return Decoded::Damaged("the record header is damaged".into());
    };
    let end = header + len as usize;
    if rest.len() < end {
        return Decoded::Incomplete;
    }
    let body = &rest[header..end];
    let body_crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != body_crc {
        return Decoded::Damaged("checksum mismatch".into());
    }
    match decode_body(body) {
        Some(record) => Decoded::Record(record, offset + end),
        None => Decoded::Damaged("checksum matches but the record does not parse".into()),
    }
}

/// A whole log file read at rest: its framing, every intact record from the
/// start with its offset, and where they end (the first incomplete or damaged
/// record, or the end of the file).
pub type ParsedFile<'a> = (Framing, Vec<(usize, Record<'a>)>, usize);

/// Reads a whole log file at rest, for tools and tests (recovery streams it
/// with `log::replay`); the error says why the file header is not valid.
pub fn parse_file(file: &[u8]) -> Result<ParsedFile<'_>, String> {
    let framing = match read_file_header(file) {
        FileStart::Header(framing) => framing,
        FileStart::Legacy => Framing::Legacy,
        FileStart::Bad(reason) => return Err(reason),
    };
    let mut records = Vec::new();
    let mut at = framing.records_start();
    while let Decoded::Record(record, next) = decode_at(file, at, framing) {
        records.push((at, record));
        at = next;
    }
    Ok((framing, records, at))
}

/// A cursor over a record body; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn txn(&mut self) -> Option<TxnId> {
        let coordinator = ShardId(self.u32()? as usize);
        let seq = self.u64()?;
        Some(TxnId { coordinator, seq })
    }

    fn effect(&mut self) -> Option<Effect<'a>> {
        match self.u8()? {
            KIND_PUT => Some(Effect::Put {
                key: self.bytes()?,
                version: self.u64()?,
                value: self.bytes()?,
                deadline: None,
            }),
            KIND_PUTX => Some(Effect::Put {
                key: self.bytes()?,
                version: self.u64()?,
                value: self.bytes()?,
                deadline: Some(self.u64()?),
            }),
            KIND_DEL => Some(Effect::Del { key: self.bytes()? }),
            KIND_EXPIRE => Some(Effect::Expire {
                key: self.bytes()?,
                deadline: Some(self.u64()?),
            }),
            KIND_PERSIST => Some(Effect::Expire {
                key: self.bytes()?,
                deadline: None,
            }),
            _ => None,
        }
    }

    fn effects(&mut self) -> Option<Vec<Effect<'a>>> {
        let n = self.u32()? as usize;
        // Each effect takes at least 5 bytes: a count beyond that is damage.
        if n > self.bytes.len() / 5 {
            return None;
        }
        (0..n).map(|_| self.effect()).collect()
    }
}

fn decode_body(body: &[u8]) -> Option<Record<'_>> {
    let mut reader = Reader { bytes: body };
    let record = match *body.first()? {
        KIND_PUT | KIND_DEL | KIND_PUTX | KIND_EXPIRE | KIND_PERSIST => {
            Record::Effect(reader.effect()?)
        }
        kind => {
            reader.u8()?;
            match kind {
                KIND_BATCH => Record::Batch(reader.effects()?),
                KIND_PREPARE => Record::Prepare {
                    txn: reader.txn()?,
                    effects: reader.effects()?,
                },
                KIND_DECIDE => Record::Decide {
                    txn: reader.txn()?,
                    commit: reader.u8()? != 0,
                },
                KIND_COMMIT => Record::Commit { txn: reader.txn()? },
                KIND_PAD => {
                    // Its bytes mean nothing: the checksum has vouched for them.
                    reader.bytes = &[];
                    Record::Pad
                }
                _ => return None,
            }
        }
    };
    reader.bytes.is_empty().then_some(record)
}

/// Bytes of a PUT or PUTX record before its value, header included, for a
/// key of `key_len` bytes: how far before a value its record starts.
pub fn put_value_offset(key_len: usize) -> usize {
    HEADER_BYTES + 1 + 4 + key_len + 8 + 4
}

/// Bytes of a whole PUT record (a PUTX, `with_deadline`) of a key of
/// `key_len` bytes and a value of `value_len`, header included.
pub fn put_record_bytes(key_len: usize, value_len: usize, with_deadline: bool) -> usize {
    put_value_offset(key_len) + value_len + if with_deadline { 8 } else { 0 }
}

/// Checks that `record` is one whole PUT record (a PUTX, `with_deadline`)
/// of `key` at `version` with a value of `value_len` bytes, and returns the
/// value. The disk engine reads a value with its record to check it so
/// (`log::values`). Checked: the length in the header, the body's checksum
/// (so every byte of the body), the kind, the key and the version. Not
/// checked: the header's own checksum, which needs the file's epoch and
/// covers nothing the length and body checksum do not.
pub fn check_put_record<'a>(
    record: &'a [u8],
    key: &[u8],
    version: u64,
    value_len: usize,
    with_deadline: bool,
) -> Result<&'a [u8], String> {
    let expected = put_record_bytes(key.len(), value_len, with_deadline);
    if record.len() != expected {
        return Err(format!(
            "{} bytes read of a {expected}-byte record",
            record.len()
        ));
    }
    let word = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"));
    let (len, body_crc) = (word(0), word(4));
    if len as usize != expected - HEADER_BYTES {
        return Err(format!(
            "the record header says {len} bytes, not {} (damaged, or not this value's record)",
            expected - HEADER_BYTES
        ));
    }
    let body = &record[HEADER_BYTES..];
    if crc32fast::hash(body) != body_crc {
        return Err("the record fails its checksum (damaged on disk)".into());
    }
    let mut reader = Reader { bytes: body };
    match reader.effect() {
        Some(Effect::Put {
            key: k,
            version: v,
            value,
            deadline,
        }) if k == key
            && v == version
            && value.len() == value_len
            && deadline.is_some() == with_deadline
            && reader.bytes.is_empty() =>
        {
            Ok(value)
        }
        _ => Err(format!(
            "the record is not the PUT of this key at version {version} (a location pointing \
             at the wrong record)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXN: TxnId = TxnId {
        coordinator: ShardId(3),
        seq: 77,
    };
    const EPOCH: u64 = 0x5eed_0ff1_1e00;
    const FRAMING: Framing = Framing::Epoch(EPOCH);

    /// A whole log file (header + one record of every kind), and where its
    /// records start.
    fn all_records() -> (Vec<u8>, usize) {
        let put = Effect::Put {
            key: b"k",
            version: 9,
            value: b"\xa1v",
            deadline: None,
        };
        let del = Effect::Del { key: b"gone" };
        let mut log = Vec::new();
        write_file_header(&mut log, EPOCH);
        let start = log.len();
        write_effect(&mut log, &put);
        write_effect(&mut log, &del);
        write_batch(&mut log, &[put.clone(), del.clone()]);
        write_prepare(&mut log, TXN, &[put]);
        write_decide(&mut log, TXN, true);
        write_commit(&mut log, TXN);
        stamp(&mut log[start..], EPOCH);
        (log, start)
    }

    #[test]
    fn a_put_record_read_from_its_value_offset_checks_whole_and_any_flipped_bit_fails() {
        let value: &[u8] = b"\xa5hello";
        for deadline in [None, Some(1_700_000_000_000)] {
            let put = Effect::Put {
                key: b"some key",
                version: 300,
                value,
                deadline,
            };
            let mut out = vec![0xee; 7];
            let at = write_effect_locating(&mut out, &put).expect("a PUT has a value");
            stamp(&mut out[7..], EPOCH);
            let start = at - put_value_offset(8);
            assert_eq!(start, 7, "the record starts where it was written");
            let with_deadline = deadline.is_some();
            let len = put_record_bytes(8, value.len(), with_deadline);
            assert_eq!(start + len, out.len());
            let record = &out[start..];
            let check = |record: &[u8], key: &[u8], version, putx| {
                check_put_record(record, key, version, value.len(), putx).map(<[u8]>::to_vec)
            };
            assert_eq!(
                check(record, b"some key", 300, with_deadline),
                Ok(value.to_vec())
            );
            assert!(check(record, b"some kez", 300, with_deadline).is_err());
            assert!(check(record, b"some key", 301, with_deadline).is_err());
            assert!(check(&record[..len - 1], b"some key", 300, with_deadline).is_err());
            // The length and body checksum (bytes 0..8) and every body byte;
            // the header's own checksum (8..12) covers nothing more.
            for byte in (0..8).chain(HEADER_BYTES..len) {
                for bit in 0..8 {
                    let mut damaged = record.to_vec();
                    damaged[byte] ^= 1 << bit;
                    let what = format!("byte {byte}, bit {bit}, {deadline:?}");
                    assert!(
                        check(&damaged, b"some key", 300, with_deadline).is_err(),
                        "{what}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_value_offsets_a_writer_is_told_point_at_the_value_bytes() {
        let mut out = vec![0xee; 5];
        let value: &[u8] = b"\xa5hello";
        let put = Effect::Put {
            key: b"key",
            version: 3,
            value,
            deadline: Some(9),
        };
        let at = write_effect_locating(&mut out, &put).expect("a PUT has a value");
        assert_eq!(&out[at..at + value.len()], value);
        assert_eq!(
            write_effect_locating(&mut out, &Effect::Del { key: b"k" }),
            None
        );
        let effects = [
            Effect::Del { key: b"gone" },
            Effect::Put {
                key: b"a",
                version: 1,
                value: b"\xa1x",
                deadline: None,
            },
            Effect::Put {
                key: b"bb",
                version: 2,
                value: &[0xc4; 300],
                deadline: None,
            },
        ];
        let start = out.len();
        let mut found = Vec::new();
        write_batch_locating(&mut out, &effects, &mut |i, at| found.push((i, at)));
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(&out[found[0].1..found[0].1 + 2], b"\xa1x");
        assert_eq!(&out[found[1].1..found[1].1 + 300], &[0xc4; 300][..]);
        let mut plain = Vec::new();
        write_batch(&mut plain, &effects);
        assert_eq!(&out[start..], &plain[..], "the same bytes as write_batch");
    }

    #[test]
    fn every_record_kind_round_trips() {
        let (log, _) = all_records();
        let (framing, records, end) = parse_file(&log).expect("a valid file header");
        assert_eq!((framing, end), (FRAMING, log.len()));
        let kinds: Vec<_> = records.into_iter().map(|(_, record)| record).collect();
        assert_eq!(kinds.len(), 6);
        assert!(
            matches!(&kinds[3], Record::Prepare { txn, effects } if *txn == TXN && effects.len() == 1)
        );
        assert_eq!(
            kinds[4],
            Record::Decide {
                txn: TXN,
                commit: true
            }
        );
    }

    #[test]
    fn a_cut_record_is_incomplete_and_a_flipped_bit_is_damage() {
        let (log, start) = all_records();
        let first_end = match decode_at(&log, start, FRAMING) {
            Decoded::Record(_, next) => next,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            decode_at(&log[..first_end - 1], start, FRAMING),
            Decoded::Incomplete
        );
        assert_eq!(
            decode_at(&log[..start + 3], start, FRAMING),
            Decoded::Incomplete
        );
        assert_eq!(decode_at(&[0u8; 64], 0, FRAMING), Decoded::Incomplete);
        for flipped in [start + 1, start + 5, start + 9, start + HEADER_BYTES + 2] {
            let mut damaged = log.clone();
            damaged[flipped] ^= 0x40;
            assert!(
                matches!(decode_at(&damaged, start, FRAMING), Decoded::Damaged(_)),
                "a flipped bit at offset {flipped}"
            );
        }
    }

    #[test]
    fn a_record_is_valid_only_in_the_file_of_its_epoch() {
        let (log, start) = all_records();
        let other = Framing::Epoch(EPOCH + 1);
        assert!(matches!(decode_at(&log, start, other), Decoded::Damaged(_)));
        let mut restamped = log.clone();
        stamp(&mut restamped[start..], EPOCH + 1);
        assert!(matches!(
            decode_at(&restamped, start, other),
            Decoded::Record(..)
        ));
        assert!(matches!(
            decode_at(&restamped, start, FRAMING),
            Decoded::Damaged(_)
        ));
    }

    #[test]
    fn a_file_header_is_recognised_checked_and_versioned() {
        let (log, _) = all_records();
        assert_eq!(read_file_header(&log), FileStart::Header(FRAMING));
        assert_eq!(read_file_header(b""), FileStart::Legacy);
        assert_eq!(
            read_file_header(&[1, 0, 0, 0, 9, 9, 9, 9]),
            FileStart::Legacy
        );
        assert!(matches!(read_file_header(&log[..20]), FileStart::Bad(_)));
        assert!(matches!(read_file_header(&log[..3]), FileStart::Bad(_)));
        let mut damaged = log.clone();
        damaged[17] ^= 1;
        assert!(matches!(read_file_header(&damaged), FileStart::Bad(_)));
        let mut newer = Vec::new();
        write_file_header(&mut newer, EPOCH);
        newer[8] = 3;
        let crc = crc32fast::hash(&newer[..28]);
        newer[28..32].copy_from_slice(&crc.to_le_bytes());
        match read_file_header(&newer) {
            FileStart::Bad(reason) => assert!(reason.contains("newer"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expiry_records_round_trip_alone_and_inside_batches() {
        let effects = [
            Effect::Put {
                key: b"k",
                version: 3,
                value: b"\xa1v",
                deadline: Some(1_700_000_000_123),
            },
            Effect::Expire {
                key: b"k",
                deadline: Some(u64::MAX),
            },
            Effect::Expire {
                key: b"k",
                deadline: None,
            },
        ];
        let mut log = Vec::new();
        write_file_header(&mut log, EPOCH);
        let start = log.len();
        for effect in &effects {
            write_effect(&mut log, effect);
        }
        write_batch(&mut log, &effects);
        write_prepare(&mut log, TXN, &effects);
        stamp(&mut log[start..], EPOCH);
        let (_, records, end) = parse_file(&log).expect("a valid file header");
        assert_eq!(end, log.len());
        let records: Vec<_> = records.into_iter().map(|(_, record)| record).collect();
        let mut expected: Vec<_> = effects.iter().cloned().map(Record::Effect).collect();
        expected.push(Record::Batch(effects.to_vec()));
        expected.push(Record::Prepare {
            txn: TXN,
            effects: effects.to_vec(),
        });
        assert_eq!(records, expected);
    }

    #[test]
    fn a_write_without_a_deadline_is_a_format_1_put_and_format_1_files_still_read() {
        let put = Effect::Put {
            key: b"k",
            version: 1,
            value: b"v",
            deadline: None,
        };
        let mut record = Vec::new();
        write_effect(&mut record, &put);
        assert_eq!(record[HEADER_BYTES], KIND_PUT);
        let mut v1 = Vec::new();
        write_file_header(&mut v1, EPOCH);
        v1[8] = 1;
        let crc = crc32fast::hash(&v1[..28]);
        v1[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(read_file_header(&v1), FileStart::Header(FRAMING));
    }

    /// Records of many sizes, one of them longer than `window` bytes, and
    /// where each starts.
    fn records_of_many_sizes(window: usize) -> (Vec<u8>, Vec<usize>) {
        let (mut records, mut starts) = (Vec::new(), Vec::new());
        for i in 0..300usize {
            starts.push(records.len());
            let value = vec![i as u8; if i == 150 { 3 * window } else { i * 37 % 300 }];
            let put = Effect::Put {
                key: b"k",
                version: i as u64,
                value: &value,
                deadline: None,
            };
            write_effect(&mut records, &put);
        }
        stamp(&mut records, EPOCH);
        (records, starts)
    }

    #[test]
    fn chunks_end_at_record_boundaries_and_a_record_longer_than_a_chunk_is_one_chunk() {
        const WINDOW: usize = 1024;
        let (records, starts) = records_of_many_sizes(WINDOW);
        let (mut at, mut copied, mut nr_chunks, mut longer) = (0, Vec::new(), 0, 0);
        while at < records.len() && nr_chunks < records.len() {
            // As the switch reads: a window of the bytes left, at most WINDOW.
            let window = &records[at..records.len().min(at + WINDOW)];
            let len = chunk_len(window).expect("the window starts with a record");
            let chunk = &records[at..at + len];
            assert!(starts.contains(&(at + len)) || at + len == records.len());
            let nr_records = stamp(&mut chunk.to_vec(), EPOCH);
            if len > WINDOW {
                assert_eq!(nr_records, 1, "only a single record may exceed a chunk");
                longer += 1;
            } else {
                // Whole records, as many as fit: the next one did not.
                let next = records.get(at + len..).and_then(|rest| rest.get(..4));
                if let Some(next_len) = next {
                    let next_len = u32::from_le_bytes(next_len.try_into().expect("4 bytes"));
                    assert!(len + HEADER_BYTES + next_len as usize > WINDOW);
                }
            }
            copied.extend_from_slice(chunk);
            at += len;
            nr_chunks += 1;
        }
        assert_eq!(copied, records, "every byte copied once, in order");
        assert_eq!(longer, 1, "the long record is a chunk of its own");
        assert!(nr_chunks > records.len() / WINDOW, "{nr_chunks} chunks");
    }

    #[test]
    fn a_window_without_a_record_header_has_no_chunk() {
        let (records, _) = records_of_many_sizes(64);
        assert_eq!(chunk_len(&[]), None);
        assert_eq!(chunk_len(&records[..HEADER_BYTES - 1]), None);
        assert_eq!(chunk_len(&[0; 64]), None, "zero padding is no record");
        let first = HEADER_BYTES + u32::from_le_bytes(records[..4].try_into().expect("4")) as usize;
        let mut then_zeros = records[..first].to_vec();
        then_zeros.extend_from_slice(&[0; 64]);
        assert_eq!(chunk_len(&then_zeros), Some(first));
    }

    #[test]
    fn a_pad_record_holds_nothing_and_is_checked_like_any_record() {
        let mut log = Vec::new();
        write_file_header(&mut log, EPOCH);
        let start = log.len();
        write_pad(&mut log, MIN_PAD_BYTES);
        write_pad(&mut log, 4096 + 12);
        write_effect(&mut log, &Effect::Del { key: b"k" });
        assert_eq!(stamp(&mut log[start..], EPOCH), 1, "PADs are not counted");
        let (_, records, end) = parse_file(&log).expect("a valid file header");
        assert_eq!(end, log.len());
        let at: Vec<_> = records.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, [start, start + 13, start + 13 + 4108]);
        assert_eq!(records[0].1, Record::Pad);
        assert_eq!(records[1].1, Record::Pad);
        assert_eq!(records[0].1.txn(), None);
        let mut damaged = log.clone();
        damaged[start + 13 + 100] ^= 1;
        assert!(matches!(
            decode_at(&damaged, start + 13, FRAMING),
            Decoded::Damaged(_)
        ));
        assert_eq!(
            decode_at(&log[..start + 13 + 4000], start + 13, FRAMING),
            Decoded::Incomplete,
            "a PAD cut short is a torn tail"
        );
    }

    #[test]
    #[should_panic(expected = "cannot hold its header")]
    fn a_pad_record_shorter_than_its_header_and_kind_is_refused() {
        write_pad(&mut Vec::new(), MIN_PAD_BYTES - 1);
    }

    #[test]
    fn legacy_records_decode_with_their_eight_byte_headers() {
        let mut legacy = Vec::new();
        write_effect(&mut legacy, &Effect::Del { key: b"k" });
        // A 0.1 record: len | crc | body (no header checksum).
        legacy.drain(8..12);
        assert!(matches!(
            decode_at(&legacy, 0, Framing::Legacy),
            Decoded::Record(Record::Effect(Effect::Del { key: b"k" }), 14)
        ));
    }
}
