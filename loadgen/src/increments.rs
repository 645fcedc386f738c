//! The contended counter (`--preset concave-increments`): every connection
//! repeatedly does concave's `put(get(key) + 1)` on one key they all share —
//! a real versioned increment, which fails when another connection wrote first.
//!
//! Before the run the counter (`inc-000…0`, see [`crate::keys`]) is reset with
//! `[2, K]` then `[5, K, 0, 0]`: value 0 at version 1. Then each connection
//! loops, one message in flight (the write depends on the read):
//!
//! 1. `[[4, K]]` (GETV) must answer `[[-3, n, v]]` with `n = v - 1`: every
//!    applied increment writes n + 1 at version v + 1, so the value is always
//!    one less than the version, and a torn or lost update would break that.
//! 2. `[[5, K, n + 1, v]]` (PUTV) answers `[[-4, v + 1]]` — a *success* — or
//!    `[[-5, c]]` with `c > v` — a *conflict*: another connection incremented
//!    since the read. Conflicts are counted, not errors; the loop reads again.
//!
//! Anything else is a mismatch. A message is one request, so `--messages 2000`
//! is 1 000 read-then-write attempts. After the run the counter is read once
//! more: its value must equal the successes summed over every connection (all
//! replies, warm-up and drain included) and its version successes + 1
//! ([`verify`]); the report fails otherwise.

use crate::keys::{write_key, COUNTER_PREFIX};
use crate::protocol::msgpack::{self, bin_header, OP_GETV, OP_PUTV};
use crate::script::{Script, Tally};
use corekv::client::Client;
use corekv::proto::frame::{begin_frame, finish_frame, LEN_PREFIX_BYTES};
use corekv::proto::message::{Element, Request};
use corekv::proto::msgpack::Cursor;
use corekv::proto::reply::{write_uint, TAG_DONE, TAG_VERSIONED, TAG_VERSION_CONFLICT};
use std::net::SocketAddr;
use std::time::Duration;

/// The counter's name for keys of `key_bytes`.
pub fn counter_key(key_bytes: usize) -> Vec<u8> {
    let mut key = vec![0; key_bytes];
    write_key(&COUNTER_PREFIX, 0, &mut key);
    key
}

fn client(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
    Client::connect(addr, Some(timeout)).map_err(|e| e.to_string())
}

/// Resets the counter to value 0 at version 1.
pub fn reset(addr: SocketAddr, key_bytes: usize, timeout: Duration) -> Result<(), String> {
    let key = counter_key(key_bytes);
    let reset = [Request::Del(key.clone()), Request::PutV(key, 0.into(), 0)];
    match client(addr, timeout)?.call(&reset) {
        Ok(elements) if elements == [Element::Done(1)] => Ok(()),
        Ok(elements) => Err(format!("resetting the counter answered {elements:?}")),
        Err(e) => Err(format!("resetting the counter: {e}")),
    }
}

/// The counter's final state, checked against the successes counted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub value: Option<u64>,
    pub version: Option<u64>,
    /// Value = successes and version = successes + 1.
    pub verified: bool,
    /// Why not, if not.
    pub problem: Option<String>,
}

/// Reads the counter and compares it with `successes`.
pub fn verify(addr: SocketAddr, key_bytes: usize, timeout: Duration, successes: u64) -> Verdict {
    let read = client(addr, timeout)
        .and_then(|mut c| c.getv(&counter_key(key_bytes)).map_err(|e| e.to_string()));
    let (value, version) = match read {
        Ok(Some((value, version))) => (value.as_u64(), version),
        Ok(None) => return failed(None, None, "the counter is gone".into()),
        Err(e) => return failed(None, None, format!("reading the counter: {e}")),
    };
    if value == Some(successes) && version == successes + 1 {
        return Verdict {
            value,
            version: Some(version),
            verified: true,
            problem: None,
        };
    }
    let problem = format!(
        "the counter holds {value:?} at version {version}, but {successes} increments succeeded \
         (expected {successes} at version {})",
        successes + 1
    );
    failed(value, Some(version), problem)
}

fn failed(value: Option<u64>, version: Option<u64>, problem: String) -> Verdict {
    Verdict {
        value,
        version,
        verified: false,
        problem: Some(problem),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Read,
    Write { value: u64, version: u64 },
}

/// One connection's read-increment-write loop.
pub struct Increments {
    key: Vec<u8>,
    state: State,
    tally: Tally,
}

impl Increments {
    pub fn new(key_bytes: usize) -> Increments {
        Increments {
            key: counter_key(key_bytes),
            state: State::Read,
            tally: Tally::default(),
        }
    }

    fn judge(&mut self, body: &[u8], measured: bool) -> Result<State, &'static str> {
        match self.state {
            State::Read => {
                let (value, version) = read_element(body, 3, TAG_VERSIONED)?;
                if value + 1 != version {
                    return Err("the value is not version - 1");
                }
                Ok(State::Write { value, version })
            }
            State::Write { version, .. } => {
                match read_element(body, 2, TAG_DONE) {
                    Ok((new_version, _)) if new_version == version + 1 => {
                        self.tally.successes += 1;
                        self.tally.measured_successes += u64::from(measured);
                    }
                    Ok(_) => return Err("applied at a wrong version"),
                    Err(_) => match read_element(body, 2, TAG_VERSION_CONFLICT) {
                        Ok((current, _)) if current > version => self.tally.conflicts += 1,
                        _ => return Err("neither applied nor a conflict with a newer version"),
                    },
                }
                self.tally.attempts += 1;
                Ok(State::Read)
            }
        }
    }
}

/// Reads a reply body of exactly one element `[tag, a]` (`arity` 2) or
/// `[tag, a, b]` (`arity` 3) of non-negative integers; returns `(a, b)` (b = 0
/// for arity 2).
fn read_element(body: &[u8], arity: u64, tag: i8) -> Result<(u64, u64), &'static str> {
    let bad = |_| "malformed";
    let mut c = Cursor::new(body);
    if c.read_array_len().map_err(bad)? != 1 || c.read_array_len().map_err(bad)? != arity {
        return Err("not one element of the expected arity");
    }
    if c.read_int().map_err(bad)? != i128::from(tag) {
        return Err("unexpected tag");
    }
    let mut uint = || {
        c.read_int()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or("not a non-negative integer")
    };
    let a = uint()?;
    let b = if arity == 3 { uint()? } else { 0 };
    if !c.is_empty() {
        return Err("trailing bytes");
    }
    Ok((a, b))
}

impl Script for Increments {
    fn next(&mut self, _: u64, out: &mut Vec<u8>, _: &mut Vec<u8>) -> u32 {
        let start = begin_frame(out);
        match self.state {
            State::Read => out.extend_from_slice(&[0x91, 0x92, OP_GETV]),
            State::Write { .. } => out.extend_from_slice(&[0x91, 0x94, OP_PUTV]),
        }
        bin_header(out, self.key.len());
        out.extend_from_slice(&self.key);
        if let State::Write { value, version } = self.state {
            write_uint(out, value + 1);
            write_uint(out, version);
        }
        finish_frame(out, start);
        1
    }

    fn check(&mut self, _: u64, reply: &[u8], _: &[u8], measured: bool) -> Result<(), String> {
        let body = reply.get(LEN_PREFIX_BYTES..).unwrap_or_default();
        match self.judge(body, measured) {
            Ok(next) => {
                self.state = next;
                Ok(())
            }
            Err(why) => {
                let sent = self.state;
                self.state = State::Read;
                Err(format!(
                    "{why}: after {sent:?} got {}",
                    msgpack::describe(reply)
                ))
            }
        }
    }

    fn tally(&self) -> Tally {
        self.tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv::proto::reply::{
        write_array_len, write_done, write_version_conflict, write_versioned,
    };

    fn reply(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        write_array_len(&mut out, 1);
        write(&mut out);
        finish_frame(&mut out, start);
        out
    }

    fn request(script: &mut Increments) -> Request {
        let mut out = Vec::new();
        assert_eq!(script.next(0, &mut out, &mut Vec::new()), 1);
        let mut body = &out[LEN_PREFIX_BYTES..];
        let value = rmpv::decode::read_value(&mut body).expect("msgpack");
        let r = value[0].as_array().expect("one request").clone();
        let key = r[1].as_slice().expect("bin key").to_vec();
        match r[0].as_u64() {
            Some(4) => Request::GetV(key),
            Some(5) => Request::PutV(key, r[2].clone(), r[3].as_u64().expect("version")),
            other => panic!("opcode {other:?}"),
        }
    }

    #[test]
    fn reads_then_writes_value_plus_one_at_the_version_read() {
        let mut s = Increments::new(16);
        let key = b"inc-000000000000".to_vec();
        assert_eq!(request(&mut s), Request::GetV(key.clone()));
        s.check(0, &reply(|o| write_versioned(o, &[7], 8)), &[], true)
            .expect("valid");
        assert_eq!(request(&mut s), Request::PutV(key.clone(), 8.into(), 8));
        s.check(1, &reply(|o| write_done(o, 9)), &[], true)
            .expect("success");
        assert_eq!(request(&mut s), Request::GetV(key));
        s.check(2, &reply(|o| write_versioned(o, &[9], 10)), &[], false)
            .expect("valid");
        s.check(3, &reply(|o| write_version_conflict(o, 11)), &[], false)
            .expect("conflict");
        let tally = s.tally();
        assert_eq!(
            (tally.attempts, tally.successes, tally.conflicts),
            (2, 1, 1)
        );
        assert_eq!(tally.measured_successes, 1);
    }

    #[test]
    fn impossible_replies_are_mismatches_and_the_loop_reads_again() {
        let mut s = Increments::new(16);
        let wrong = reply(|o| write_versioned(o, &[5], 5));
        assert!(s
            .check(0, &wrong, &[], true)
            .expect_err("value != version - 1")
            .contains("version - 1"));
        s.check(1, &reply(|o| write_versioned(o, &[4], 5)), &[], true)
            .expect("valid");
        let stale = reply(|o| write_version_conflict(o, 5));
        assert!(
            s.check(2, &stale, &[], true).is_err(),
            "a conflict must name a newer version"
        );
        assert!(matches!(request(&mut s), Request::GetV(_)));
        s.check(3, &reply(|o| write_versioned(o, &[4], 5)), &[], true)
            .expect("valid");
        assert!(
            s.check(4, &reply(|o| write_done(o, 7)), &[], true).is_err(),
            "skipped a version"
        );
        assert_eq!(s.tally().successes, 0);
    }
}
