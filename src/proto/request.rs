//! Decoding and validating request messages.
//!
//! A request message is a msgpack array of requests (BRIEF §3):
//!
//! ```text
//! [0, K]             GET        [4, K]             GETV
//! [1, K, V]          SET        [5, K, V, version] PUTV
//! [2, K]             DEL        [6, K]             RM
//! [3, [R...]]        ATOMIC     [7]                STATS
//! [8, K, version]    CHECK
//! [9, shard, position, count, pattern]   SCAN
//! [10, shard]        FLUSH
//! [11, K, delta]     INCRBY     [12, K, suffix]    APPEND
//! [13, K, delta]     INCRBYFLOAT
//! [16, K, V, ttl_ms] SET with a TTL
//! [17, K, ttl_ms]    EXPIRE     [18, K]            TTL
//! [19, K]            PERSIST    [20, K, unix_ms]   EXPIREAT
//! [21, K, V]         SET keeping the deadline (KEEPTTL)
//! [22, K]            EXPIRETIME [23, K, V, unix_ms] SET with a deadline
//! [24]               SLOTMAP: a cluster node's slot map
//! ```
//!
//! [`decode_message`] validates a whole message before anything runs: if any
//! request in it is malformed, the message is refused as one [`RequestError`] and
//! nothing executes. A decoded request is an [`Op`]: the opcode plus byte spans
//! into the buffer it was decoded from, so keys and values are never copied here.
//! Values stay raw msgpack and are returned byte-for-byte.
//!
//! Error classes: bytes that are not exactly one msgpack value are `BADFRAME`;
//! valid msgpack that is not a valid message is `BADREQ`; a key over the limit is
//! `TOOBIG`.

use super::error::{ErrorCode, RequestError};
use super::msgpack::{Cursor, DecodeError};
use std::ops::Range;

/// A byte range inside the buffer an [`Op`] was decoded from. `u32` keeps `Op`
/// small; frames are limited far below 4 GiB by the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn from_range(range: Range<usize>) -> Span {
        debug_assert!(range.end <= u32::MAX as usize);
        Span {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// The bytes this span covers in `buf`.
    pub fn of(self, buf: &[u8]) -> &[u8] {
        &buf[self.range()]
    }
}

/// The request opcodes of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Get = 0,
    Set = 1,
    Del = 2,
    Atomic = 3,
    GetV = 4,
    PutV = 5,
    Rm = 6,
    Stats = 7,
    Check = 8,
    Scan = 9,
    Flush = 10,
    IncrBy = 11,
    Append = 12,
    IncrByFloat = 13,
    SetTtl = 16,
    Expire = 17,
    Ttl = 18,
    Persist = 19,
    ExpireAt = 20,
    SetKeepTtl = 21,
    ExpireTime = 22,
    SetAt = 23,
    /// A cluster node's map of nodes and their slots, answered by the node
    /// itself (no shard runs it).
    SlotMap = 24,
}

impl OpKind {
    fn from_opcode(opcode: i128) -> Option<OpKind> {
        let kind = match opcode {
            0 => OpKind::Get,
            1 => OpKind::Set,
            2 => OpKind::Del,
            3 => OpKind::Atomic,
            4 => OpKind::GetV,
            5 => OpKind::PutV,
            6 => OpKind::Rm,
            7 => OpKind::Stats,
            8 => OpKind::Check,
            9 => OpKind::Scan,
            10 => OpKind::Flush,
            11 => OpKind::IncrBy,
            12 => OpKind::Append,
            13 => OpKind::IncrByFloat,
            16..=23 => return OpKind::expiry_from_opcode(opcode),
            24 => OpKind::SlotMap,
            _ => return None,
        };
        Some(kind)
    }

    /// The expiry opcodes, 16..=23.
    fn expiry_from_opcode(opcode: i128) -> Option<OpKind> {
        let kind = match opcode {
            16 => OpKind::SetTtl,
            17 => OpKind::Expire,
            18 => OpKind::Ttl,
            19 => OpKind::Persist,
            20 => OpKind::ExpireAt,
            21 => OpKind::SetKeepTtl,
            22 => OpKind::ExpireTime,
            23 => OpKind::SetAt,
            _ => return None,
        };
        Some(kind)
    }

    /// Elements in the request array, opcode included.
    fn arity(self) -> u64 {
        match self {
            OpKind::Stats | OpKind::SlotMap => 1,
            OpKind::Get | OpKind::Del | OpKind::GetV | OpKind::Rm | OpKind::Atomic => 2,
            OpKind::Ttl | OpKind::Persist | OpKind::ExpireTime => 2,
            OpKind::Set | OpKind::Expire | OpKind::ExpireAt | OpKind::SetKeepTtl => 3,
            OpKind::PutV | OpKind::SetTtl | OpKind::SetAt => 4,
            OpKind::Check => 3,
            OpKind::Scan => 5,
            OpKind::Flush => 2,
            OpKind::IncrBy | OpKind::Append | OpKind::IncrByFloat => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "GET",
            OpKind::Set => "SET",
            OpKind::Del => "DEL",
            OpKind::Atomic => "ATOMIC",
            OpKind::GetV => "GETV",
            OpKind::PutV => "PUTV",
            OpKind::Rm => "RM",
            OpKind::Stats => "STATS",
            OpKind::Check => "CHECK",
            OpKind::Scan => "SCAN",
            OpKind::Flush => "FLUSH",
            OpKind::IncrBy => "INCRBY",
            OpKind::Append => "APPEND",
            OpKind::IncrByFloat => "INCRBYFLOAT",
            OpKind::SetTtl => "SETTTL",
            OpKind::Expire => "EXPIRE",
            OpKind::Ttl => "TTL",
            OpKind::Persist => "PERSIST",
            OpKind::ExpireAt => "EXPIREAT",
            OpKind::SetKeepTtl => "SETKEEPTTL",
            OpKind::ExpireTime => "EXPIRETIME",
            OpKind::SetAt => "SETAT",
            OpKind::SlotMap => "SLOTMAP",
        }
    }

    /// Whether the request changes the table (and so may be refused with OOM).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            OpKind::Set
                | OpKind::PutV
                | OpKind::SetTtl
                | OpKind::Expire
                | OpKind::Persist
                | OpKind::ExpireAt
                | OpKind::SetKeepTtl
                | OpKind::SetAt
        ) || self.is_read_modify_write()
    }

    /// INCRBY, INCRBYFLOAT and APPEND: the table computes the new value
    /// from the old.
    pub fn is_read_modify_write(self) -> bool {
        matches!(self, OpKind::IncrBy | OpKind::Append | OpKind::IncrByFloat)
    }

    /// Whether the request may change the table: a write or a delete.
    pub fn writes(self) -> bool {
        self.is_write() || matches!(self, OpKind::Del | OpKind::Rm | OpKind::Flush)
    }

    /// SCAN and FLUSH name the shard they run on instead of a key.
    pub fn targets_a_shard(self) -> bool {
        matches!(self, OpKind::Scan | OpKind::Flush)
    }

    /// Whether the request is one of expiry's (opcodes 16..=23), which
    /// `Table::apply_expiry` runs.
    pub fn is_expiry(self) -> bool {
        (OpKind::SetTtl as u8..=OpKind::SetAt as u8).contains(&(self as u8))
    }
}

/// One decoded request. Spans point into the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    /// The key's payload bytes (the str/bin header excluded); empty for STATS
    /// and SLOTMAP.
    pub key: Span,
    /// The value's complete msgpack encoding for SET and PUTV; APPEND's suffix
    /// bytes (its payload, without the str/bin header); empty otherwise.
    pub value: Span,
    /// PUTV's and CHECK's expected version; INCRBY's delta (an i64's bits),
    /// INCRBYFLOAT's (an f64's bits);
    /// SCAN's position; 0 otherwise.
    pub version: u64,
    /// SET with a TTL and EXPIRE: the time to live in milliseconds; SET with
    /// a deadline and EXPIREAT: the deadline in Unix milliseconds; 0
    /// otherwise.
    pub expiry_ms: u64,
    /// The whole request array, so it can be forwarded to another shard verbatim.
    pub raw: Span,
    /// ATOMIC only: how many requests follow this one in the op list as its body.
    pub nr_inner: u32,
    /// SCAN and FLUSH only: the shard they run on, and SCAN's entry count.
    pub target: ShardTarget,
}

/// The shard a SCAN or FLUSH runs on (modulo the number of shards), and how
/// many table entries a SCAN visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardTarget {
    pub shard: u32,
    pub count: u32,
}

/// Most table entries one SCAN request visits, whatever count it asks for:
/// bounds the reply and the time a shard spends on it.
pub const MAX_SCAN_COUNT: u32 = 100_000;

/// ATOMIC batches may nest (their results are flattened); deeper than this is
/// refused, so decoding a hostile message cannot exhaust the stack.
pub const MAX_ATOMIC_DEPTH: usize = 32;

/// Limits checked while decoding.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_key_bytes: usize,
}

/// Decodes the message body `buf[body]` and appends its requests to `out`.
/// On error `out` is left as it was and nothing of the message may run.
pub fn decode_message(
    buf: &[u8],
    body: Range<usize>,
    limits: &RequestLimits,
    out: &mut Vec<Op>,
) -> Result<(), RequestError> {
    check_single_value(buf, body.clone())?;
    let first_new = out.len();
    let result = decode_requests(buf, body.start, limits, out);
    if result.is_err() {
        out.truncate(first_new);
    }
    result
}

/// The body must be exactly one well-formed msgpack value.
fn check_single_value(buf: &[u8], body: Range<usize>) -> Result<(), RequestError> {
    if body.is_empty() {
        return Err(RequestError::new(ErrorCode::BadFrame, "empty frame body"));
    }
    let bytes = &buf[..body.end];
    let mut cursor = Cursor::at(bytes, body.start);
    cursor
        .skip_value()
        .map_err(|e| RequestError::new(ErrorCode::BadFrame, format!("body is not msgpack: {e}")))?;
    if !cursor.is_empty() {
        let trailing = body.end - cursor.position();
        return Err(RequestError::new(
            ErrorCode::BadFrame,
            format!("{trailing} trailing bytes after the message's msgpack value"),
        ));
    }
    Ok(())
}

fn decode_requests(
    buf: &[u8],
    start: usize,
    limits: &RequestLimits,
    out: &mut Vec<Op>,
) -> Result<(), RequestError> {
    let mut cursor = Cursor::at(buf, start);
    if !cursor.next_is_array() {
        return Err(bad_req("a request message must be an array of requests"));
    }
    let nr_requests = cursor.read_array_len().map_err(req_error)?;
    for index in 0..nr_requests {
        decode_request(&mut cursor, limits, out)
            .map_err(|e| RequestError::new(e.code, format!("request {index}: {}", e.message)))?;
    }
    Ok(())
}

/// Decodes one request at the cursor and appends it to `out`. An ATOMIC request
/// appends a marker op followed by its body, flattened: nested ATOMICs add their
/// requests, not markers, since nesting changes nothing but the grouping. The
/// caller has checked the bytes are valid msgpack, so decode errors here mean
/// "valid msgpack of the wrong shape".
pub fn decode_request(
    cursor: &mut Cursor,
    limits: &RequestLimits,
    out: &mut Vec<Op>,
) -> Result<(), RequestError> {
    decode_nested(cursor, limits, out, 0)
}

fn decode_nested(
    cursor: &mut Cursor,
    limits: &RequestLimits,
    out: &mut Vec<Op>,
    depth: usize,
) -> Result<(), RequestError> {
    let raw_start = cursor.position();
    let kind = read_header(cursor)?;
    let mut op = Op {
        kind,
        key: Span::default(),
        value: Span::default(),
        version: 0,
        expiry_ms: 0,
        raw: Span::default(),
        nr_inner: 0,
        target: ShardTarget::default(),
    };
    match kind {
        OpKind::Atomic => return decode_atomic(cursor, limits, out, depth, raw_start),
        OpKind::Stats | OpKind::SlotMap | OpKind::Scan | OpKind::Flush if depth > 0 => {
            return Err(bad_req(format!("{} cannot run inside ATOMIC", kind.name())))
        }
        OpKind::Stats | OpKind::SlotMap => {}
        OpKind::Scan | OpKind::Flush => decode_shard_target(cursor, limits, kind, &mut op)?,
        _ => op.key = read_key(cursor, limits)?,
    }
    if matches!(
        kind,
        OpKind::Set | OpKind::PutV | OpKind::SetTtl | OpKind::SetKeepTtl | OpKind::SetAt
    ) {
        op.value = Span::from_range(cursor.skip_value().map_err(req_error)?);
    }
    if kind == OpKind::IncrBy {
        op.version = read_delta(cursor)? as u64;
    }
    if kind == OpKind::IncrByFloat {
        let delta = cursor
            .read_f64()
            .map_err(|_| bad_req("the delta must be a number"))?;
        if !delta.is_finite() {
            return Err(bad_req("the delta must be finite"));
        }
        op.version = delta.to_bits();
    }
    if kind == OpKind::Append {
        op.value = Span::from_range(
            cursor
                .read_str_or_bin()
                .map_err(|_| bad_req("APPEND's suffix must be a msgpack str or bin"))?,
        );
    }
    if matches!(kind, OpKind::PutV | OpKind::Check) {
        op.version = read_version(cursor)?;
    }
    if matches!(kind, OpKind::SetTtl | OpKind::Expire) {
        op.expiry_ms = read_ttl(cursor, kind)?;
    }
    if matches!(kind, OpKind::SetAt | OpKind::ExpireAt) {
        op.expiry_ms = read_deadline(cursor, kind)?;
    }
    op.raw = Span::from_range(raw_start..cursor.position());
    out.push(op);
    Ok(())
}

/// Reads `[opcode, ...` up to the first argument and checks the arity.
fn read_header(cursor: &mut Cursor) -> Result<OpKind, RequestError> {
    if !cursor.next_is_array() {
        return Err(bad_req("a request must be an array [opcode, ...]"));
    }
    let len = cursor.read_array_len().map_err(req_error)?;
    if len == 0 {
        return Err(bad_req("a request must start with an opcode"));
    }
    let opcode = cursor
        .read_int()
        .map_err(|_| bad_req("the opcode must be an integer"))?;
    let kind = OpKind::from_opcode(opcode)
        .ok_or_else(|| bad_req(format!("unknown opcode {opcode} (known: 0-13, 16-24)")))?;
    if len != kind.arity() {
        return Err(bad_req(format!(
            "{} takes {} elements including the opcode, got {len}",
            kind.name(),
            kind.arity()
        )));
    }
    Ok(kind)
}

fn decode_atomic(
    cursor: &mut Cursor,
    limits: &RequestLimits,
    out: &mut Vec<Op>,
    depth: usize,
    raw_start: usize,
) -> Result<(), RequestError> {
    if depth >= MAX_ATOMIC_DEPTH {
        return Err(bad_req(format!(
            "ATOMIC nested deeper than {MAX_ATOMIC_DEPTH} levels"
        )));
    }
    if !cursor.next_is_array() {
        return Err(bad_req("ATOMIC takes an array of requests: [3, [R...]]"));
    }
    let marker = out.len();
    if depth == 0 {
        out.push(Op {
            kind: OpKind::Atomic,
            key: Span::default(),
            value: Span::default(),
            version: 0,
            expiry_ms: 0,
            raw: Span::default(),
            nr_inner: 0,
            target: ShardTarget::default(),
        });
    }
    let nr_requests = cursor.read_array_len().map_err(req_error)?;
    for index in 0..nr_requests {
        decode_nested(cursor, limits, out, depth + 1).map_err(|e| {
            RequestError::new(e.code, format!("ATOMIC request {index}: {}", e.message))
        })?;
    }
    if depth == 0 {
        out[marker].nr_inner = (out.len() - marker - 1) as u32;
        out[marker].raw = Span::from_range(raw_start..cursor.position());
    }
    Ok(())
}

/// `shard` (FLUSH), or `shard, position, count, pattern` (SCAN): the pattern
/// is a Redis glob in the key's place, empty for every key.
fn decode_shard_target(
    cursor: &mut Cursor,
    limits: &RequestLimits,
    kind: OpKind,
    op: &mut Op,
) -> Result<(), RequestError> {
    let mut number = |what: &str| {
        let n = cursor
            .read_int()
            .map_err(|_| bad_req(format!("the {what} must be an integer")))?;
        u64::try_from(n).map_err(|_| bad_req(format!("the {what} must be >= 0, got {n}")))
    };
    op.target.shard = u32::try_from(number("shard")?).unwrap_or(u32::MAX);
    if kind == OpKind::Scan {
        op.version = number("position")?;
        op.target.count = number("count")?.clamp(1, u64::from(MAX_SCAN_COUNT)) as u32;
        op.key = read_key(cursor, limits)?;
    }
    Ok(())
}

fn read_key(cursor: &mut Cursor, limits: &RequestLimits) -> Result<Span, RequestError> {
    let key = cursor
        .read_str_or_bin()
        .map_err(|_| bad_req("the key must be a msgpack str or bin"))?;
    if key.len() > limits.max_key_bytes {
        return Err(RequestError::new(
            ErrorCode::TooBig,
            format!(
                "key of {} bytes exceeds the limit of {} bytes (--max-key-bytes)",
                key.len(),
                limits.max_key_bytes
            ),
        ));
    }
    Ok(Span::from_range(key))
}

fn read_version(cursor: &mut Cursor) -> Result<u64, RequestError> {
    let version = cursor
        .read_int()
        .map_err(|_| bad_req("the version must be an integer"))?;
    u64::try_from(version).map_err(|_| bad_req(format!("the version must be >= 0, got {version}")))
}

/// INCRBY's delta, a signed 64-bit integer.
fn read_delta(cursor: &mut Cursor) -> Result<i64, RequestError> {
    let delta = cursor
        .read_int()
        .map_err(|_| bad_req("the delta must be an integer"))?;
    i64::try_from(delta).map_err(|_| bad_req(format!("the delta {delta} is outside the i64 range")))
}

/// The longest TTL accepted: about 290 million years, so that a deadline
/// (now + TTL, in Unix milliseconds) always fits an i64 as well as a u64.
pub const MAX_TTL_MS: u64 = 1 << 53;

/// Reads the TTL of SET with a TTL (at least 1 ms) or EXPIRE (0 removes the
/// key now).
fn read_ttl(cursor: &mut Cursor, kind: OpKind) -> Result<u64, RequestError> {
    let ttl = cursor
        .read_int()
        .map_err(|_| bad_req("ttl_ms must be an integer (milliseconds)"))?;
    let min = u64::from(kind == OpKind::SetTtl);
    match u64::try_from(ttl) {
        Ok(ttl) if (min..=MAX_TTL_MS).contains(&ttl) => Ok(ttl),
        _ => Err(bad_req(format!(
            "{}'s ttl_ms must be between {min} and {MAX_TTL_MS}, got {ttl}",
            kind.name()
        ))),
    }
}

/// The latest deadline accepted, in Unix milliseconds: as for a TTL.
pub const MAX_DEADLINE_MS: u64 = 1 << 53;

/// Reads the deadline of SET with a deadline or EXPIREAT: Unix milliseconds,
/// where one already past is allowed (the key goes at once).
fn read_deadline(cursor: &mut Cursor, kind: OpKind) -> Result<u64, RequestError> {
    let deadline = cursor
        .read_int()
        .map_err(|_| bad_req("unix_ms must be an integer (Unix milliseconds)"))?;
    match u64::try_from(deadline) {
        Ok(deadline) if deadline <= MAX_DEADLINE_MS => Ok(deadline),
        _ => Err(bad_req(format!(
            "{}'s unix_ms must be between 0 and {MAX_DEADLINE_MS}, got {deadline}",
            kind.name()
        ))),
    }
}

fn bad_req(message: impl Into<String>) -> RequestError {
    RequestError::new(ErrorCode::BadReq, message)
}

fn req_error(e: DecodeError) -> RequestError {
    bad_req(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    const LIMITS: RequestLimits = RequestLimits { max_key_bytes: 16 };

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode");
        out
    }

    fn decode(v: &Value) -> Result<(Vec<u8>, Vec<Op>), RequestError> {
        let bytes = encode(v);
        let mut ops = Vec::new();
        decode_message(&bytes, 0..bytes.len(), &LIMITS, &mut ops)?;
        Ok((bytes, ops))
    }

    fn req(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn decodes_every_request_kind_with_spans_into_the_buffer() {
        let message = req(vec![
            req(vec![0.into(), Value::Binary(b"k1".to_vec())]),
            req(vec![1.into(), "k2".into(), req(vec![1.into(), 2.into()])]),
            req(vec![2.into(), "k3".into()]),
            req(vec![4.into(), "k4".into()]),
            req(vec![5.into(), "k5".into(), "v".into(), 7.into()]),
            req(vec![6.into(), "k6".into()]),
            req(vec![7.into()]),
            req(vec![16.into(), "k7".into(), "v".into(), 1500.into()]),
            req(vec![17.into(), "k8".into(), 0.into()]),
            req(vec![18.into(), "k9".into()]),
            req(vec![19.into(), "k10".into()]),
            req(vec![20.into(), "k11".into(), 1_700_000_000_000u64.into()]),
            req(vec![21.into(), "k12".into(), "v".into()]),
            req(vec![22.into(), "k13".into()]),
            req(vec![23.into(), "k14".into(), "v".into(), 5.into()]),
            req(vec![24.into()]),
        ]);
        let (bytes, ops) = decode(&message).expect("valid");
        let kinds: Vec<_> = ops.iter().map(|op| op.kind).collect();
        use OpKind::*;
        assert_eq!(
            kinds,
            [
                Get, Set, Del, GetV, PutV, Rm, Stats, SetTtl, Expire, Ttl, Persist, ExpireAt,
                SetKeepTtl, ExpireTime, SetAt, SlotMap
            ]
        );
        assert_eq!(ops[11].expiry_ms, 1_700_000_000_000);
        assert_eq!(
            (ops[12].value.of(&bytes), ops[12].expiry_ms),
            (&b"\xa1v"[..], 0)
        );
        assert_eq!(
            (ops[14].value.of(&bytes), ops[14].expiry_ms),
            (&b"\xa1v"[..], 5)
        );
        assert_eq!(
            (ops[7].value.of(&bytes), ops[7].expiry_ms),
            (&b"\xa1v"[..], 1500)
        );
        assert_eq!((ops[8].key.of(&bytes), ops[8].expiry_ms), (&b"k8"[..], 0));
        assert_eq!(ops[0].key.of(&bytes), b"k1");
        assert_eq!(ops[1].value.of(&bytes), [0x92, 0x01, 0x02]);
        assert_eq!(ops[4].version, 7);
        assert_eq!(ops[6].raw.of(&bytes), [0x91, 0x07]);
    }

    #[test]
    fn atomic_decodes_to_a_marker_and_its_flattened_body() {
        let inner = req(vec![
            req(vec![0.into(), "a".into()]),
            req(vec![
                3.into(),
                req(vec![req(vec![1.into(), "b".into(), 1.into()])]),
            ]),
            req(vec![2.into(), "c".into()]),
        ]);
        let message = req(vec![
            req(vec![3.into(), inner]),
            req(vec![0.into(), "d".into()]),
        ]);
        let (bytes, ops) = decode(&message).expect("valid");
        let kinds: Vec<_> = ops.iter().map(|op| op.kind).collect();
        use OpKind::*;
        assert_eq!(kinds, [Atomic, Get, Set, Del, Get]);
        assert_eq!(ops[0].nr_inner, 3);
        assert_eq!(ops[0].raw.len(), bytes.len() - 1 - ops[4].raw.len());
        assert_eq!(ops[2].key.of(&bytes), b"b");
    }

    #[test]
    fn atomic_nesting_is_bounded() {
        let mut atomic = req(vec![]);
        for _ in 0..MAX_ATOMIC_DEPTH + 1 {
            atomic = req(vec![3.into(), req(vec![atomic])]);
        }
        let err = decode(&req(vec![atomic])).expect_err("too deep");
        assert_eq!(err.code, ErrorCode::BadReq);
        assert!(err.message.contains("nested deeper"), "{err}");
    }

    #[test]
    fn empty_message_decodes_to_no_ops() {
        let (_, ops) = decode(&req(vec![])).expect("valid");
        assert!(ops.is_empty());
    }

    #[test]
    fn malformed_messages_are_refused_with_the_right_code() {
        let cases = [
            (Value::from(5), ErrorCode::BadReq),
            (req(vec![Value::from(1)]), ErrorCode::BadReq),
            (req(vec![req(vec![])]), ErrorCode::BadReq),
            (
                req(vec![req(vec![9.into(), "k".into()])]),
                ErrorCode::BadReq,
            ),
            (req(vec![req(vec![0.into()])]), ErrorCode::BadReq),
            (req(vec![req(vec![0.into(), 5.into()])]), ErrorCode::BadReq),
            (
                req(vec![req(vec![5.into(), "k".into(), 1.into(), (-1).into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![3.into(), "not a list".into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![3.into(), req(vec![req(vec![7.into()])])])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![0.into(), Value::Binary(vec![0; 17])])]),
                ErrorCode::TooBig,
            ),
            (
                req(vec![req(vec![16.into(), "k".into(), 1.into(), 0.into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![17.into(), "k".into(), (-5).into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![17.into(), "k".into(), "10s".into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![18.into(), "k".into(), 1.into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![25.into(), "k".into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![24.into(), "k".into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![3.into(), req(vec![req(vec![24.into()])])])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![20.into(), "k".into(), (-1).into()])]),
                ErrorCode::BadReq,
            ),
            (
                req(vec![req(vec![
                    23.into(),
                    "k".into(),
                    1.into(),
                    u64::MAX.into(),
                ])]),
                ErrorCode::BadReq,
            ),
        ];
        for (message, code) in cases {
            let err = decode(&message).expect_err("malformed");
            assert_eq!(err.code, code, "{message:?}: {err}");
        }
    }

    #[test]
    fn a_bad_request_after_good_ones_leaves_no_ops_behind() {
        let bytes = encode(&req(vec![
            req(vec![0.into(), "a".into()]),
            req(vec![0.into()]),
        ]));
        let mut ops = Vec::new();
        assert!(decode_message(&bytes, 0..bytes.len(), &LIMITS, &mut ops).is_err());
        assert!(ops.is_empty());
    }

    #[test]
    fn bytes_that_are_not_one_msgpack_value_are_badframe() {
        for bytes in [vec![0xc1], vec![0x92, 0x01], vec![0x90, 0x90], vec![]] {
            let mut ops = Vec::new();
            let err = decode_message(&bytes, 0..bytes.len(), &LIMITS, &mut ops).expect_err("bad");
            assert_eq!(err.code, ErrorCode::BadFrame, "{bytes:?}");
        }
    }
}
