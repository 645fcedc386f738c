//! Judging the replies of a mixed workload run with `--preloaded`: no prefill,
//! the keys were loaded by an earlier run, so a GET of a key this run has not
//! written cannot expect an exact value — only *a* value of `--value-bytes`.
//!
//! A [`Mix`](crate::mix::Mix) tells [`LoadedReplies`] what each result element
//! of a message must be ([`Expect`]) as it renders the message, and hands the
//! reply over when it arrives. The reply is walked element by element
//! (msgpack: the elements of the reply array; RESP: one reply per command):
//!
//! ```text
//! Expect::Loaded  GET of a key loaded earlier   msgpack [-1, bin of value_bytes]  RESP $<value_bytes>\r\n…\r\n
//! Expect::Value   GET of a key this run wrote   the exact bytes the Mix put in `expected`
//! Expect::Ok      RESP SET                      +OK\r\n (in `expected`)
//! ```
//!
//! A GET answered not-found (`[-2]`, `$-1`) is a *miss*; one that found a value
//! that fits is a *hit*. Both are counted ([`Tally::get_hits`],
//! [`Tally::get_misses`]), and a message with a miss or any other wrong element
//! is a mismatch, so a run over keys that were never loaded fails loudly
//! instead of timing not-found replies.
//!
//! `expected` holds the bytes of the `Value` and `Ok` elements only, in order
//! (msgpack: after the frame prefix and the array header the Mix wrote).

use crate::protocol::{resp, Protocol};
use crate::script::Tally;
use corekv::proto::frame::LEN_PREFIX_BYTES;
use corekv::proto::msgpack::Cursor;
use corekv::proto::reply::{TAG_FOUND, TAG_NOT_FOUND};
use std::collections::VecDeque;

/// What one result element of a message must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// GET of key index `key`, loaded earlier: any value of `--value-bytes`.
    Loaded { key: u64 },
    /// GET of key index `key`, written by this run: the exact bytes in `expected`.
    Value { key: u64 },
    /// RESP's `+OK` of a SET, in `expected`.
    Ok,
}

/// How one reply element compared with its [`Expect`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Hit,
    Miss,
    /// The `+OK` of a SET.
    Done,
    Wrong(String),
}

/// The verdicts on one reply, summed.
#[derive(Debug, Default)]
struct Judgement {
    hits: u64,
    misses: u64,
    /// The first wrong element, described.
    first_wrong: Option<String>,
}

impl Judgement {
    fn add(&mut self, expect: Expect, verdict: Verdict, describe_key: &impl Fn(u64) -> String) {
        let why = match verdict {
            Verdict::Hit => {
                self.hits += 1;
                return;
            }
            Verdict::Done => return,
            Verdict::Miss => {
                self.misses += 1;
                miss(expect, describe_key)
            }
            Verdict::Wrong(why) => match expect {
                Expect::Loaded { key } | Expect::Value { key } => {
                    format!("GET {}: {why}", describe_key(key))
                }
                Expect::Ok => format!("SET: {why}"),
            },
        };
        self.first_wrong.get_or_insert(why);
    }

    fn into_result(self) -> Result<(), String> {
        match self.first_wrong {
            None => Ok(()),
            Some(why) if self.misses > 1 => Err(format!(
                "{why} ({} GETs of the message missed)",
                self.misses
            )),
            Some(why) => Err(why),
        }
    }
}

/// The expectations of the messages in flight, and the GET tallies.
pub struct LoadedReplies {
    protocol: Protocol,
    value_bytes: usize,
    /// Every result element of the messages in flight, oldest first.
    pending: VecDeque<Expect>,
    /// Result elements per message in flight, oldest first.
    per_message: VecDeque<u32>,
    /// Result elements of the message being rendered so far.
    rendering: u32,
    hits: u64,
    misses: u64,
}

impl LoadedReplies {
    pub fn new(protocol: Protocol, value_bytes: usize) -> LoadedReplies {
        LoadedReplies {
            protocol,
            value_bytes,
            pending: VecDeque::new(),
            per_message: VecDeque::new(),
            rendering: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// The next result element of the message being rendered.
    pub fn expect(&mut self, expect: Expect) {
        self.pending.push_back(expect);
        self.rendering += 1;
    }

    /// The message being rendered is complete.
    pub fn end_message(&mut self) {
        self.per_message.push_back(self.rendering);
        self.rendering = 0;
    }

    pub fn tally(&self) -> Tally {
        Tally {
            get_hits: self.hits,
            get_misses: self.misses,
            ..Tally::default()
        }
    }

    /// Judges the reply to the oldest message in flight; `describe_key` names
    /// a key index for error messages.
    pub fn judge(
        &mut self,
        reply: &[u8],
        expected: &[u8],
        describe_key: impl Fn(u64) -> String,
    ) -> Result<(), String> {
        let results = self
            .per_message
            .pop_front()
            .expect("a reply is judged only for a message rendered before it")
            as usize;
        let mut judgement = Judgement::default();
        let walked = match self.protocol {
            Protocol::Msgpack => {
                self.walk_msgpack(reply, expected, results, &mut judgement, &describe_key)
            }
            Protocol::Resp => {
                self.walk_resp(reply, expected, results, &mut judgement, &describe_key)
            }
        };
        self.pending.drain(..results);
        self.hits += judgement.hits;
        self.misses += judgement.misses;
        walked.map_err(|why| format!("{why}: {}", self.protocol.describe(reply)))?;
        judgement.into_result()
    }

    /// Judges every element of a msgpack reply of `results` elements, or says
    /// why it is not one.
    fn walk_msgpack(
        &self,
        reply: &[u8],
        expected: &[u8],
        results: usize,
        judgement: &mut Judgement,
        describe_key: &impl Fn(u64) -> String,
    ) -> Result<(), String> {
        let body = reply.get(LEN_PREFIX_BYTES..).unwrap_or_default();
        let expected = expected.get(LEN_PREFIX_BYTES..).unwrap_or_default();
        let (mut got, mut want) = (Cursor::new(body), Cursor::new(expected));
        let nr = got.read_array_len().map_err(|e| e.to_string())?;
        if nr != results as u64 {
            return Err(format!("expected {results} result elements, got {nr}"));
        }
        want.read_array_len()
            .expect("the Mix writes the expected array header");
        for &expect in self.pending.range(..results) {
            let element = &body[got.skip_value().map_err(|e| e.to_string())?];
            let verdict = match expect {
                Expect::Loaded { .. } => self.msgpack_loaded(element),
                Expect::Value { .. } | Expect::Ok => {
                    let wanted = want
                        .skip_value()
                        .expect("the Mix writes every exact element");
                    exact(expect, element, &expected[wanted], msgpack_is_miss(element))
                }
            };
            judgement.add(expect, verdict, describe_key);
        }
        Ok(())
    }

    fn msgpack_loaded(&self, element: &[u8]) -> Verdict {
        if msgpack_is_miss(element) {
            return Verdict::Miss;
        }
        let mut c = Cursor::new(element);
        let found =
            c.read_array_len().ok() == Some(2) && c.read_int().ok() == Some(i128::from(TAG_FOUND));
        match found.then(|| c.read_str_or_bin().ok()).flatten() {
            Some(value) => self.length_verdict(value.len()),
            None => Verdict::Wrong(format!(
                "expected a value, got {}",
                describe_msgpack_element(element)
            )),
        }
    }

    /// Judges each of the `results` replies of a RESP message, or says why
    /// they cannot be told apart.
    fn walk_resp(
        &self,
        reply: &[u8],
        expected: &[u8],
        results: usize,
        judgement: &mut Judgement,
        describe_key: &impl Fn(u64) -> String,
    ) -> Result<(), String> {
        let (mut at, mut wanted_at) = (0, 0);
        for &expect in self.pending.range(..results) {
            let element = one_resp_reply(reply, at)?;
            at += element.len();
            let verdict = match expect {
                Expect::Loaded { .. } => self.resp_loaded(element),
                Expect::Value { .. } | Expect::Ok => {
                    let wanted = one_resp_reply(expected, wanted_at)
                        .expect("the Mix writes every exact reply");
                    wanted_at += wanted.len();
                    exact(expect, element, wanted, element == RESP_NIL)
                }
            };
            judgement.add(expect, verdict, describe_key);
        }
        Ok(())
    }

    fn resp_loaded(&self, element: &[u8]) -> Verdict {
        if element == RESP_NIL {
            return Verdict::Miss;
        }
        // A complete bulk string: `$<n>\r\n`, n bytes, `\r\n`.
        match element.first() {
            Some(b'$') => {
                let header = element
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                self.length_verdict(element.len() - header - 2)
            }
            _ => Verdict::Wrong(format!("expected a value, got {}", resp::describe(element))),
        }
    }

    fn length_verdict(&self, value_len: usize) -> Verdict {
        if value_len == self.value_bytes {
            return Verdict::Hit;
        }
        Verdict::Wrong(format!(
            "a value of {value_len} bytes, but --value-bytes is {} (was the key space loaded \
             with another --value-bytes?)",
            self.value_bytes
        ))
    }
}

/// RESP's reply to a GET of a missing key.
const RESP_NIL: &[u8] = b"$-1\r\n";

/// The verdict on an element whose exact bytes are known.
fn exact(expect: Expect, element: &[u8], wanted: &[u8], is_miss: bool) -> Verdict {
    match (element == wanted, expect) {
        (true, Expect::Ok) => Verdict::Done,
        (true, _) => Verdict::Hit,
        (false, Expect::Value { .. }) if is_miss => Verdict::Miss,
        (false, _) => Verdict::Wrong(format!(
            "expected exactly what this run wrote ({} bytes of reply), got {} bytes",
            wanted.len(),
            element.len()
        )),
    }
}

fn msgpack_is_miss(element: &[u8]) -> bool {
    let mut c = Cursor::new(element);
    c.read_array_len().ok() == Some(1) && c.read_int().ok() == Some(i128::from(TAG_NOT_FOUND))
}

/// One msgpack reply element, described as a one-element reply.
fn describe_msgpack_element(element: &[u8]) -> String {
    let mut message = vec![0; LEN_PREFIX_BYTES];
    message.push(0x91);
    message.extend_from_slice(element);
    Protocol::Msgpack.describe(&message)
}

fn miss(expect: Expect, describe_key: &impl Fn(u64) -> String) -> String {
    match expect {
        Expect::Loaded { key } => format!(
            "GET {}: not found (--preloaded: was this key space loaded, with the same --keys \
             and --key-bytes?)",
            describe_key(key)
        ),
        Expect::Value { key } => {
            format!(
                "GET {}: not found, but this run wrote it",
                describe_key(key)
            )
        }
        Expect::Ok => "a SET answered not-found".to_owned(),
    }
}

/// The RESP reply starting at `at` in `buf`, which must hold it whole.
fn one_resp_reply(buf: &[u8], at: usize) -> Result<&[u8], String> {
    let rest = buf.get(at..).unwrap_or_default();
    match resp::reply_len(rest, 1) {
        Ok(Some(len)) => Ok(&rest[..len]),
        Ok(None) => Err("fewer replies than commands".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
