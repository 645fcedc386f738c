//! The mixed workload (`--get-ratio`, `--putv-ratio`, `--distribution`): each
//! of a message's `--ops-per-message` requests is drawn at random — GET with
//! probability `get_ratio`, PUTV with `putv_ratio`, SET otherwise — on a key
//! drawn uniformly or Zipf-distributed from the connection's own partition
//! (position 0 of each partition is its hottest key; see [`crate::keys`]).
//!
//! Every reply is still known in advance. No other connection writes a
//! partition's keys, and requests of one connection on one key take effect in
//! the order sent, so the connection can track each key's value and version
//! itself, at the moment it renders a request:
//! - GET expects `[-1, value]` of the key's tracked value;
//! - PUTV sends the tracked version and expects `[-4, version + 1]`;
//! - SET expects nothing; both writes make the key's version old + 1.
//!
//! That needs a known starting point: before the run (untimed, before the start
//! gate), [`Prefill`] writes every key of the partition with `[2, K]` then
//! `[5, K, V, 0]` — delete, then create at version 1 — in messages of
//! [`PREFILL_KEYS_PER_MESSAGE`] keys, whatever the server held before. With
//! RESP, which has no versions (and no PUTV), the prefill is a SET per key.
//!
//! With `--preloaded` ([`MixSpec::preloaded`]) there is no prefill: an earlier
//! run loaded the keys, with values this connection cannot know. A GET of a key
//! the connection has not written then expects *a* value of `--value-bytes`,
//! and counts as a hit or a miss ([`crate::preloaded`]); once the connection
//! SETs a key it knows its value again, and GETs of it expect that value
//! exactly. PUTV needs the key's version, so it is refused with `--preloaded`.

use crate::distribution::{Distribution, KeySampler, Rng};
use crate::keys::{mix, write_key, write_value, ConnKeys, OWNED_PREFIX};
use crate::preloaded::{Expect, LoadedReplies};
use crate::protocol::msgpack::{bin_header, OP_DEL, OP_GET, OP_PUTV, OP_SET, OP_SET_TTL};
use crate::protocol::resp::bulk_header;
use crate::protocol::Protocol;
use crate::script::{compare, Script, Tally};
use corekv::proto::frame::{begin_frame, finish_frame};
use corekv::proto::reply::{write_array_len, write_done, write_found_header, write_uint};
use std::collections::HashMap;

/// Keys written per prefill message: big enough that prefill is quick, small
/// enough that a message stays far below any frame limit.
pub const PREFILL_KEYS_PER_MESSAGE: u64 = 100;

/// The mix's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixSpec {
    pub ops: u32,
    pub get_ratio: f64,
    pub putv_ratio: f64,
    pub distribution: Distribution,
    /// Zipf exponent (used with [`Distribution::Zipf`]).
    pub zipf_theta: f64,
    /// SETs expire this many milliseconds after they run (SET with a TTL;
    /// RESP: `SET K V PX ms`). It must outlast the run: a GET of a key that
    /// expired would not find the value it expects.
    pub set_ttl_ms: Option<u64>,
    /// `--preloaded`: no prefill; the keys hold values an earlier run wrote.
    pub preloaded: bool,
}

impl MixSpec {
    pub fn set_ratio(&self) -> f64 {
        (1.0 - self.get_ratio - self.putv_ratio).max(0.0)
    }

    fn draw(&self, u: f64) -> Kind {
        if u < self.get_ratio {
            Kind::Get
        } else if u < self.get_ratio + self.putv_ratio {
            Kind::PutV
        } else {
            Kind::Set
        }
    }
}

/// Prefill messages a partition of `len` keys takes.
pub fn prefill_messages(len: u64) -> u64 {
    len.div_ceil(PREFILL_KEYS_PER_MESSAGE)
}

/// Seed of the value prefill writes to key `index`.
fn prefill_value(seed: u64, index: u64) -> u64 {
    mix(seed ^ index, u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Set,
    PutV,
}

/// Encodes single requests on owned keys, and their expected results, in
/// either protocol, straight into the connection's buffers.
struct Encoder {
    protocol: Protocol,
    key_bytes: usize,
    value_bytes: usize,
    /// RESP bulk headers of a key and of a value (`$16\r\n`).
    key_header: Vec<u8>,
    value_header: Vec<u8>,
    /// SET's TTL ([`MixSpec::set_ttl_ms`]).
    set_ttl_ms: Option<u64>,
}

impl Encoder {
    fn new(protocol: Protocol, key_bytes: usize, value_bytes: usize) -> Encoder {
        let (mut key_header, mut value_header) = (Vec::new(), Vec::new());
        bulk_header(&mut key_header, key_bytes);
        bulk_header(&mut value_header, value_bytes);
        Encoder {
            protocol,
            key_bytes,
            value_bytes,
            key_header,
            value_header,
            set_ttl_ms: None,
        }
    }

    /// The encoder, its SETs with a TTL of `ttl_ms` if there is one.
    fn with_set_ttl(self, set_ttl_ms: Option<u64>) -> Encoder {
        Encoder { set_ttl_ms, ..self }
    }

    /// Starts a message of `requests` requests whose reply has `results`
    /// elements; returns where the two frames start.
    fn begin(
        &self,
        out: &mut Vec<u8>,
        expected: &mut Vec<u8>,
        requests: u32,
        results: u32,
    ) -> [usize; 2] {
        if self.protocol == Protocol::Resp {
            return [0, 0];
        }
        let frames = [begin_frame(out), begin_frame(expected)];
        write_array_len(out, requests);
        write_array_len(expected, results);
        frames
    }

    /// Fills in the length prefixes of the frames [`Encoder::begin`] started.
    fn finish(&self, out: &mut [u8], expected: &mut [u8], [out_start, expected_start]: [usize; 2]) {
        if self.protocol == Protocol::Msgpack {
            finish_frame(out, out_start);
            finish_frame(expected, expected_start);
        }
    }

    /// GET, expecting the value of seed `value` (nothing, if it is unknown).
    fn get(&self, out: &mut Vec<u8>, expected: &mut Vec<u8>, index: u64, value: Option<u64>) {
        match self.protocol {
            Protocol::Msgpack => {
                out.extend_from_slice(&[0x92, OP_GET]);
                self.key(out, index);
                if let Some(value) = value {
                    write_found_header(expected);
                    self.value(expected, value);
                }
            }
            Protocol::Resp => {
                out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
                self.key(out, index);
                if let Some(value) = value {
                    self.value(expected, value);
                }
            }
        }
    }

    fn set(&self, out: &mut Vec<u8>, expected: &mut Vec<u8>, index: u64, value: u64) {
        match (self.protocol, self.set_ttl_ms) {
            (Protocol::Msgpack, None) => {
                out.extend_from_slice(&[0x93, OP_SET]);
                self.key(out, index);
                self.value(out, value);
            }
            (Protocol::Msgpack, Some(ttl_ms)) => {
                out.extend_from_slice(&[0x94, OP_SET_TTL]);
                self.key(out, index);
                self.value(out, value);
                write_uint(out, ttl_ms);
            }
            (Protocol::Resp, ttl) => {
                let nr_args: &[u8] = if ttl.is_some() { b"*5" } else { b"*3" };
                out.extend_from_slice(nr_args);
                out.extend_from_slice(b"\r\n$3\r\nSET\r\n");
                self.key(out, index);
                self.value(out, value);
                if let Some(ttl_ms) = ttl {
                    let ttl = ttl_ms.to_string();
                    out.extend_from_slice(b"$2\r\nPX\r\n");
                    bulk_header(out, ttl.len());
                    out.extend_from_slice(ttl.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                expected.extend_from_slice(b"+OK\r\n");
            }
        }
    }

    /// PUTV at `version` (msgpack only), expecting it applied.
    fn putv(
        &self,
        out: &mut Vec<u8>,
        expected: &mut Vec<u8>,
        index: u64,
        value: u64,
        version: u64,
    ) {
        out.extend_from_slice(&[0x94, OP_PUTV]);
        self.key(out, index);
        self.value(out, value);
        write_uint(out, version);
        write_done(expected, version + 1);
    }

    /// DEL (msgpack only; no result element).
    fn del(&self, out: &mut Vec<u8>, index: u64) {
        out.extend_from_slice(&[0x92, OP_DEL]);
        self.key(out, index);
    }

    fn key(&self, out: &mut Vec<u8>, index: u64) {
        self.header(out, &self.key_header, self.key_bytes);
        let at = out.len();
        out.resize(at + self.key_bytes, 0);
        write_key(&OWNED_PREFIX, index, &mut out[at..]);
        self.trailer(out);
    }

    fn value(&self, out: &mut Vec<u8>, seed: u64) {
        self.header(out, &self.value_header, self.value_bytes);
        let at = out.len();
        out.resize(at + self.value_bytes, 0);
        write_value(seed, &mut out[at..]);
        self.trailer(out);
    }

    fn header(&self, out: &mut Vec<u8>, resp_header: &[u8], len: usize) {
        match self.protocol {
            Protocol::Msgpack => bin_header(out, len),
            Protocol::Resp => out.extend_from_slice(resp_header),
        }
    }

    fn trailer(&self, out: &mut Vec<u8>) {
        if self.protocol == Protocol::Resp {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// What a connection knows about the values of its keys.
enum Known {
    /// After the prefill: per partition position, the seed of the value the
    /// key holds, and its version.
    Everything {
        values: Vec<u64>,
        versions: Vec<u64>,
    },
    /// `--preloaded`: the value seeds of the keys this run wrote, by partition
    /// position (the others hold a value an earlier run wrote), and what each
    /// reply in flight must hold.
    Written {
        values: HashMap<u64, u64>,
        replies: LoadedReplies,
    },
}

/// One request of a message: its kind, partition position, key index, and
/// (for a write) the seed of the value it writes.
#[derive(Debug, Clone, Copy)]
struct Op {
    kind: Kind,
    pos: u64,
    index: u64,
    value: u64,
}

impl Known {
    /// Renders `r` and its expected result, and tracks what it writes.
    fn render(&mut self, encoder: &Encoder, r: Op, out: &mut Vec<u8>, expected: &mut Vec<u8>) {
        match self {
            Known::Everything { values, versions } => {
                let slot = r.pos as usize;
                match r.kind {
                    Kind::Get => return encoder.get(out, expected, r.index, Some(values[slot])),
                    Kind::PutV => encoder.putv(out, expected, r.index, r.value, versions[slot]),
                    Kind::Set => encoder.set(out, expected, r.index, r.value),
                }
                values[slot] = r.value;
                versions[slot] += 1;
            }
            Known::Written { values, replies } => match r.kind {
                Kind::Get => {
                    let written = values.get(&r.pos).copied();
                    encoder.get(out, expected, r.index, written);
                    replies.expect(match written {
                        Some(_) => Expect::Value { key: r.index },
                        None => Expect::Loaded { key: r.index },
                    });
                }
                Kind::Set => {
                    encoder.set(out, expected, r.index, r.value);
                    if encoder.protocol == Protocol::Resp {
                        replies.expect(Expect::Ok);
                    }
                    values.insert(r.pos, r.value);
                }
                Kind::PutV => unreachable!("the configuration refuses PUTV with --preloaded"),
            },
        }
    }
}

/// One connection's mixed requests, with every key's tracked state.
pub struct Mix {
    spec: MixSpec,
    encoder: Encoder,
    seed: u64,
    /// The connection's keys: position → key index.
    keys: ConnKeys,
    sampler: KeySampler,
    rng: Rng,
    known: Known,
    /// This message's requests: kind and partition position.
    ops: Vec<(Kind, u64)>,
}

impl Mix {
    /// The state right after [`Prefill`] of the same partition, or with
    /// `spec.preloaded` the state an earlier loading run left.
    pub fn new(
        spec: MixSpec,
        protocol: Protocol,
        keys: &ConnKeys,
        key_bytes: usize,
        value_bytes: usize,
        seed: u64,
    ) -> Mix {
        let len = keys.owned_len();
        let known = if spec.preloaded {
            Known::Written {
                values: HashMap::new(),
                replies: LoadedReplies::new(protocol, value_bytes),
            }
        } else {
            Known::Everything {
                values: (0..len)
                    .map(|pos| prefill_value(seed, keys.owned(pos)))
                    .collect(),
                versions: vec![1; len as usize],
            }
        };
        Mix {
            spec,
            encoder: Encoder::new(protocol, key_bytes, value_bytes).with_set_ttl(spec.set_ttl_ms),
            seed,
            keys: keys.clone(),
            sampler: KeySampler::new(spec.distribution, len, spec.zipf_theta),
            rng: Rng::new(mix(seed, keys.conn)),
            known,
            ops: Vec::with_capacity(spec.ops as usize),
        }
    }

    fn draw(&mut self) {
        self.ops.clear();
        for _ in 0..self.spec.ops {
            let kind = self.spec.draw(self.rng.next_f64());
            self.ops.push((kind, self.sampler.sample(&mut self.rng)));
        }
    }
}

impl Script for Mix {
    fn next(&mut self, message: u64, out: &mut Vec<u8>, expected: &mut Vec<u8>) -> u32 {
        self.draw();
        let results = self
            .ops
            .iter()
            .filter(|(kind, _)| *kind != Kind::Set)
            .count();
        let frames = self
            .encoder
            .begin(out, expected, self.spec.ops, results as u32);
        for (i, &(kind, pos)) in self.ops.iter().enumerate() {
            let index = self.keys.owned(pos);
            // Unique per connection and message, so every write changes the value.
            let value = mix(
                self.seed ^ index,
                message * u64::from(self.spec.ops) + i as u64,
            );
            let op = Op {
                kind,
                pos,
                index,
                value,
            };
            self.known.render(&self.encoder, op, out, expected);
        }
        self.encoder.finish(out, expected, frames);
        if let Known::Written { replies, .. } = &mut self.known {
            replies.end_message();
        }
        self.spec.ops
    }

    fn check(&mut self, _: u64, reply: &[u8], expected: &[u8], _: bool) -> Result<(), String> {
        let key_bytes = self.encoder.key_bytes;
        match &mut self.known {
            Known::Everything { .. } => compare(self.encoder.protocol, reply, expected),
            Known::Written { replies, .. } => replies.judge(reply, expected, |index| {
                let mut key = vec![0; key_bytes];
                write_key(&OWNED_PREFIX, index, &mut key);
                String::from_utf8_lossy(&key).into_owned()
            }),
        }
    }

    fn tally(&self) -> Tally {
        match &self.known {
            Known::Everything { .. } => Tally::default(),
            Known::Written { replies, .. } => replies.tally(),
        }
    }
}

/// Writes a connection's whole partition to the state [`Mix::new`] assumes.
pub struct Prefill {
    encoder: Encoder,
    seed: u64,
    keys: ConnKeys,
    len: u64,
}

impl Prefill {
    pub fn new(
        protocol: Protocol,
        keys: &ConnKeys,
        key_bytes: usize,
        value_bytes: usize,
        seed: u64,
    ) -> Prefill {
        Prefill {
            encoder: Encoder::new(protocol, key_bytes, value_bytes),
            seed,
            keys: keys.clone(),
            len: keys.owned_len(),
        }
    }

    pub fn messages(&self) -> u64 {
        prefill_messages(self.len)
    }
}

impl Script for Prefill {
    fn next(&mut self, message: u64, out: &mut Vec<u8>, expected: &mut Vec<u8>) -> u32 {
        let first = message * PREFILL_KEYS_PER_MESSAGE;
        let keys = PREFILL_KEYS_PER_MESSAGE.min(self.len - first) as u32;
        let requests = match self.encoder.protocol {
            Protocol::Msgpack => 2 * keys,
            Protocol::Resp => keys,
        };
        let frames = self.encoder.begin(out, expected, requests, keys);
        for index in (first..first + u64::from(keys)).map(|pos| self.keys.owned(pos)) {
            let value = prefill_value(self.seed, index);
            match self.encoder.protocol {
                Protocol::Msgpack => {
                    self.encoder.del(out, index);
                    self.encoder.putv(out, expected, index, value, 0);
                }
                Protocol::Resp => self.encoder.set(out, expected, index, value),
            }
        }
        self.encoder.finish(out, expected, frames);
        requests
    }

    fn check(&mut self, _: u64, reply: &[u8], expected: &[u8], _: bool) -> Result<(), String> {
        compare(self.encoder.protocol, reply, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Tally;
    use corekv::proto::frame::LEN_PREFIX_BYTES;
    use corekv::proto::message::{decode_reply, Element, Request};
    use std::collections::HashMap;

    fn spec(get_ratio: f64, putv_ratio: f64, distribution: Distribution) -> MixSpec {
        MixSpec {
            ops: 4,
            get_ratio,
            putv_ratio,
            distribution,
            zipf_theta: 0.99,
            set_ttl_ms: None,
            preloaded: false,
        }
    }

    fn key(index: u64) -> Vec<u8> {
        let mut key = vec![0; 16];
        write_key(&OWNED_PREFIX, index, &mut key);
        key
    }

    #[test]
    fn a_set_with_a_ttl_is_corekvs_opcode_16_or_redis_set_px() {
        let encoder = Encoder::new(Protocol::Msgpack, 16, 32).with_set_ttl(Some(3_600_000));
        let (mut out, mut expected) = (vec![0x91], Vec::new());
        encoder.set(&mut out, &mut expected, 7, 42);
        let message: rmpv::Value = rmpv::decode::read_value(&mut &out[..]).expect("msgpack");
        let request = &message.as_array().expect("a message")[0];
        let items = request.as_array().expect("a request");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_u64(), Some(16));
        assert_eq!(items[1].as_slice(), Some(&key(7)[..]));
        assert_eq!(items[3].as_u64(), Some(3_600_000));
        assert!(expected.is_empty(), "SET with a TTL answers nothing");

        let encoder = Encoder::new(Protocol::Resp, 16, 32).with_set_ttl(Some(1500));
        let (mut out, mut expected) = (Vec::new(), Vec::new());
        encoder.set(&mut out, &mut expected, 7, 42);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("*5\r\n$3\r\nSET\r\n$16\r\n"), "{text:?}");
        assert!(text.ends_with("$2\r\nPX\r\n$4\r\n1500\r\n"), "{text:?}");
        assert_eq!(expected, b"+OK\r\n");
    }

    /// A HashMap server: applies decoded requests, returns the reply elements.
    #[derive(Default)]
    struct ModelServer(HashMap<Vec<u8>, (rmpv::Value, u64)>);

    impl ModelServer {
        fn apply(&mut self, requests: &[Request]) -> Vec<Element> {
            let mut results = Vec::new();
            for request in requests {
                match request {
                    Request::Get(k) => results.push(match self.0.get(k) {
                        Some((v, _)) => Element::Found(v.clone()),
                        None => Element::NotFound,
                    }),
                    Request::Set(k, v) => {
                        let version = self.0.get(k).map_or(0, |e| e.1) + 1;
                        self.0.insert(k.clone(), (v.clone(), version));
                    }
                    Request::Del(k) => {
                        self.0.remove(k);
                    }
                    Request::PutV(k, v, expected) => {
                        let current = self.0.get(k).map_or(0, |e| e.1);
                        assert_eq!(current, *expected, "the mix sends the current version");
                        self.0.insert(k.clone(), (v.clone(), current + 1));
                        results.push(Element::Done(current + 1));
                    }
                    other => panic!("unexpected request {other:?}"),
                }
            }
            results
        }
    }

    /// Decodes a rendered msgpack request message back into requests.
    fn decode_requests(message: &[u8]) -> Vec<Request> {
        let mut body = &message[LEN_PREFIX_BYTES..];
        let value = rmpv::decode::read_value(&mut body).expect("valid msgpack");
        let rmpv::Value::Array(items) = value else {
            panic!("not an array")
        };
        let bytes = |v: &rmpv::Value| v.as_slice().expect("bin").to_vec();
        items
            .iter()
            .map(|item| {
                let r = item.as_array().expect("request array");
                match r[0].as_u64().expect("opcode") {
                    0 => Request::Get(bytes(&r[1])),
                    1 => Request::Set(bytes(&r[1]), r[2].clone()),
                    2 => Request::Del(bytes(&r[1])),
                    5 => Request::PutV(bytes(&r[1]), r[2].clone(), r[3].as_u64().expect("version")),
                    op => panic!("opcode {op}"),
                }
            })
            .collect()
    }

    /// Runs prefill then `messages` mixed messages against the model server and
    /// checks each expected reply equals the model's; returns the request kinds seen.
    fn run_against_model(spec: MixSpec, messages: u64) -> HashMap<&'static str, usize> {
        let keys = ConnKeys::new(1, 3, 300, 5);
        let mut server = ModelServer::default();
        let (mut out, mut expected) = (Vec::new(), Vec::new());
        let mut prefill = Prefill::new(Protocol::Msgpack, &keys, 16, 10, 5);
        assert_eq!(prefill.messages(), 1);
        for message in 0..prefill.messages() {
            out.clear();
            expected.clear();
            assert_eq!(prefill.next(message, &mut out, &mut expected), 200);
            let reply = server.apply(&decode_requests(&out));
            assert_eq!(
                decode_reply(&expected[LEN_PREFIX_BYTES..]).expect("valid"),
                reply
            );
        }
        assert_eq!(server.0.len(), 100);
        let mut mix = Mix::new(spec, Protocol::Msgpack, &keys, 16, 10, 5);
        let mut kinds = HashMap::new();
        for message in 0..messages {
            out.clear();
            expected.clear();
            assert_eq!(mix.next(message, &mut out, &mut expected), spec.ops);
            let requests = decode_requests(&out);
            for r in &requests {
                let name = match r {
                    Request::Get(_) => "get",
                    Request::Set(..) => "set",
                    _ => "putv",
                };
                *kinds.entry(name).or_default() += 1;
            }
            let reply = server.apply(&requests);
            let decoded = decode_reply(&expected[LEN_PREFIX_BYTES..]).expect("valid reply");
            assert_eq!(decoded, reply, "message {message}");
            assert!(requests.iter().all(|r| match r {
                Request::Get(k) | Request::Set(k, _) | Request::PutV(k, ..) =>
                    (100..200).any(|i| key(i) == *k),
                _ => false,
            }));
        }
        kinds
    }

    #[test]
    fn every_expected_reply_matches_a_model_server_for_any_mix() {
        for distribution in [Distribution::Uniform, Distribution::Zipf] {
            let kinds = run_against_model(spec(0.5, 0.25, distribution), 2_500);
            let share = |k: &str| kinds[k] as f64 / 10_000.0;
            assert!((share("get") - 0.5).abs() < 0.03, "{kinds:?}");
            assert!((share("putv") - 0.25).abs() < 0.03, "{kinds:?}");
            assert!((share("set") - 0.25).abs() < 0.03, "{kinds:?}");
        }
        let only_gets = run_against_model(spec(1.0, 0.0, Distribution::Uniform), 50);
        assert_eq!(only_gets.keys().copied().collect::<Vec<_>>(), ["get"]);
        let only_putv = run_against_model(spec(0.0, 1.0, Distribution::Zipf), 50);
        assert_eq!(only_putv.keys().copied().collect::<Vec<_>>(), ["putv"]);
    }

    /// The msgpack reply message of `elements`, as the server encodes it.
    fn encode_reply(elements: &[Element]) -> Vec<u8> {
        let mut reply = Vec::new();
        let start = begin_frame(&mut reply);
        write_array_len(&mut reply, elements.len() as u32);
        for element in elements {
            match element {
                Element::Found(rmpv::Value::Binary(bytes)) => {
                    let mut value = Vec::new();
                    corekv::proto::reply::write_bin(&mut value, bytes);
                    corekv::proto::reply::write_found(&mut reply, &value);
                }
                Element::NotFound => corekv::proto::reply::write_not_found(&mut reply),
                other => panic!("unexpected element {other:?}"),
            }
        }
        finish_frame(&mut reply, start);
        reply
    }

    /// Runs a `--preloaded` mix (half GETs, half SETs) against a model server
    /// that holds the partition's keys `loaded`, with values of `value_bytes`
    /// the mix never saw; returns the mix's tally and the mismatches.
    fn run_preloaded_against_model(
        loaded: impl Iterator<Item = u64>,
        value_bytes: usize,
    ) -> (Tally, usize) {
        let keys = ConnKeys::new(1, 3, 300, 5);
        let mut server = ModelServer::default();
        for index in loaded {
            let value = rmpv::Value::Binary(vec![b'x'; value_bytes]);
            server.0.insert(key(index), (value, 1));
        }
        let preloaded = MixSpec {
            preloaded: true,
            ..spec(0.5, 0.0, Distribution::Uniform)
        };
        let mut mix = Mix::new(preloaded, Protocol::Msgpack, &keys, 16, 10, 5);
        let (mut out, mut expected) = (Vec::new(), Vec::new());
        let mut mismatches = 0;
        for message in 0..500 {
            out.clear();
            expected.clear();
            mix.next(message, &mut out, &mut expected);
            let reply = encode_reply(&server.apply(&decode_requests(&out)));
            mismatches += usize::from(mix.check(message, &reply, &expected, true).is_err());
        }
        (mix.tally(), mismatches)
    }

    #[test]
    fn a_preloaded_mix_takes_any_value_of_the_right_length_then_the_values_it_wrote() {
        let (tally, mismatches) = run_preloaded_against_model(100..200, 10);
        assert_eq!(mismatches, 0);
        assert_eq!(tally.get_misses, 0);
        assert!((900..1_100).contains(&tally.get_hits), "{tally:?}");
    }

    #[test]
    fn a_preloaded_mix_counts_gets_of_keys_never_loaded_as_misses_and_fails_them() {
        let (tally, mismatches) = run_preloaded_against_model(100..150, 10);
        assert!(tally.get_misses > 0 && tally.get_hits > 0, "{tally:?}");
        assert!(mismatches > 0 && mismatches as u64 <= tally.get_misses);
        let (tally, mismatches) = run_preloaded_against_model(100..200, 11);
        assert_eq!(tally.get_misses, 0, "a wrong length is not a miss");
        assert!(mismatches > 0, "but it is a wrong reply");
    }

    #[test]
    fn a_preloaded_resp_mix_judges_each_reply_on_its_own() {
        let keys = ConnKeys::new(0, 1, 4, 0);
        let only_gets = MixSpec {
            ops: 3,
            preloaded: true,
            ..spec(1.0, 0.0, Distribution::Uniform)
        };
        let mut mix = Mix::new(only_gets, Protocol::Resp, &keys, 8, 4, 0);
        let (mut out, mut expected) = (Vec::new(), Vec::new());
        for message in 0..3 {
            mix.next(message, &mut out, &mut expected);
        }
        assert!(expected.is_empty(), "no GET's value is known");
        let text = String::from_utf8(out).expect("ascii");
        assert_eq!(text.matches("*2\r\n$3\r\nGET\r\n$8\r\nkey-").count(), 9);
        assert_eq!(
            mix.check(0, b"$4\r\nabcd\r\n$4\r\n0000\r\n$4\r\nzzzz\r\n", b"", true),
            Ok(())
        );
        let miss = mix
            .check(1, b"$4\r\nabcd\r\n$-1\r\n$-1\r\n", b"", true)
            .expect_err("a miss fails the message");
        assert!(
            miss.contains("not found") && miss.contains("2 GETs"),
            "{miss}"
        );
        let error = mix
            .check(2, b"-ERR nope\r\n$4\r\nabcd\r\n$5\r\nabcde\r\n", b"", true)
            .expect_err("an error reply fails the message");
        assert!(
            error.contains("expected a value") && error.contains("ERR nope"),
            "{error}"
        );
        assert_eq!(
            (mix.tally().get_hits, mix.tally().get_misses),
            (5, 2),
            "wrong replies are neither hits nor misses"
        );
    }

    #[test]
    fn zipf_mix_concentrates_on_the_first_keys_of_the_partition() {
        let keys = ConnKeys::new(0, 1, 1_000, 2);
        let mut mix = Mix::new(
            spec(1.0, 0.0, Distribution::Zipf),
            Protocol::Msgpack,
            &keys,
            16,
            10,
            2,
        );
        let mut hot = 0;
        for _ in 0..1_000 {
            mix.draw();
            hot += mix.ops.iter().filter(|(_, pos)| *pos < 10).count();
        }
        // With theta 0.99 over 1 000 keys the 10 hottest draw about 39 % of requests.
        assert!(
            (1_400..1_800).contains(&hot),
            "{hot} of 4 000 on the 10 hottest keys"
        );
    }

    #[test]
    fn resp_mix_is_get_and_set_commands_with_their_replies() {
        let keys = ConnKeys::new(0, 1, 4, 0);
        let spec = MixSpec {
            ops: 3,
            ..spec(0.5, 0.0, Distribution::Uniform)
        };
        let mut mix = Mix::new(spec, Protocol::Resp, &keys, 8, 4, 0);
        let (mut out, mut expected) = (Vec::new(), Vec::new());
        mix.next(0, &mut out, &mut expected);
        let text = String::from_utf8(out).expect("ascii");
        let commands = text.matches("*2\r\n$3\r\nGET\r\n$8\r\nkey-").count()
            + text.matches("*3\r\n$3\r\nSET\r\n$8\r\nkey-").count();
        assert_eq!(commands, 3, "{text:?}");
        let replies = crate::protocol::resp::reply_len(&expected, 3).expect("valid RESP");
        assert_eq!(replies, Some(expected.len()));
        let mut prefill = Prefill::new(Protocol::Resp, &keys, 8, 4, 0);
        let (mut out, mut expected) = (Vec::new(), Vec::new());
        assert_eq!(prefill.next(0, &mut out, &mut expected), 4);
        assert_eq!(expected, b"+OK\r\n".repeat(4));
    }
}
