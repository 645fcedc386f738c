//! The reference model: what a correct server holds for the keys a test
//! touches, and what each request must answer, kept in an ordinary map (after
//! sled's tests/tree model). A test runs requests against the server and the
//! model side by side, compares every reply, then the final state.
#![allow(dead_code)]

use super::keys::show;
use corekv::client::{Client, Element, Request};
use rmpv::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What the server holds for one key (or for a group of keys always written
/// together).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    Absent,
    Present(Value, u64),
}

impl KeyState {
    /// The version a PUTV must name: 0 for an absent key.
    pub fn version(&self) -> u64 {
        match self {
            KeyState::Absent => 0,
            KeyState::Present(_, version) => *version,
        }
    }

    /// The state a GETV answered.
    pub fn from_element(element: &Element) -> KeyState {
        match element {
            Element::Versioned(value, version) => KeyState::Present(value.clone(), *version),
            Element::NotFound => KeyState::Absent,
            other => panic!("expected a GETV result, got {other:?}"),
        }
    }

    /// The state after a write of `value`.
    pub fn after_write(&self, value: Value) -> KeyState {
        KeyState::Present(value, self.version() + 1)
    }
}

/// GETV of every key, in messages of at most 100 requests.
pub fn getv_all(client: &mut Client, keys: &[Vec<u8>]) -> Vec<KeyState> {
    let mut states = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(100) {
        let requests: Vec<Request> = chunk.iter().map(|k| Request::GetV(k.clone())).collect();
        let reply = client.call(&requests).expect("GETV of every key");
        assert_eq!(reply.len(), chunk.len(), "{reply:?}");
        states.extend(reply.iter().map(KeyState::from_element));
    }
    states
}

/// The keys a test touched, their values and versions, and the STATS
/// counters its requests moved.
#[derive(Debug, Default, Clone)]
pub struct Model {
    entries: BTreeMap<Vec<u8>, (Value, u64)>,
    /// Every key a request named, present or not: [`Model::check`] reads them all.
    touched: BTreeSet<Vec<u8>>,
    counters: BTreeMap<&'static str, u64>,
}

impl Model {
    /// The state of `key` now.
    pub fn state(&self, key: &[u8]) -> KeyState {
        match self.entries.get(key) {
            Some((value, version)) => KeyState::Present(value.clone(), *version),
            None => KeyState::Absent,
        }
    }

    /// How many keys are present.
    pub fn nr_keys(&self) -> usize {
        self.entries.len()
    }

    /// The values of the keys present.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.entries.values().map(|(value, _)| value)
    }

    /// How far the model's requests moved STATS counter `name` (gets, hits,
    /// misses, sets, deletes, version_conflicts).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Applies one request and returns the elements the server must answer
    /// with. An ATOMIC is modelled only when it commits (its requests are
    /// applied in order); STATS is not modelled.
    pub fn apply(&mut self, request: &Request) -> Vec<Element> {
        match request {
            Request::Atomic(inner) => {
                let elements: Vec<Element> =
                    inner.iter().flat_map(|r| self.apply_leaf(r)).collect();
                let conflict = elements
                    .iter()
                    .any(|e| matches!(e, Element::VersionConflict(_)));
                assert!(
                    !conflict,
                    "the model predicts only ATOMIC batches that commit: {request:?}"
                );
                elements
            }
            leaf => self.apply_leaf(leaf).into_iter().collect(),
        }
    }

    /// The elements of the reply to a message of `requests`.
    pub fn reply_to(&mut self, requests: &[Request]) -> Vec<Element> {
        requests.iter().flat_map(|r| self.apply(r)).collect()
    }

    /// Checks every key the model touched against the server with GETV.
    pub fn check(&self, client: &mut Client, context: &str) {
        let keys: Vec<Vec<u8>> = self.touched.iter().cloned().collect();
        for (key, found) in keys.iter().zip(getv_all(client, &keys)) {
            assert_eq!(found, self.state(key), "{context}: key {}", show(key));
        }
    }

    /// [`Model::check`] for a model of everything the server holds: also
    /// STATS keys, so the server has no key the model does not.
    pub fn check_all(&self, client: &mut Client, context: &str) {
        self.check(client, context);
        let stats = client.stats().expect("stats");
        assert_eq!(stats["keys"], self.nr_keys() as u64, "{context}: {stats:?}");
    }

    /// Makes `key` hold `state` (a write the test made outside the model).
    pub fn set_state(&mut self, key: &[u8], state: KeyState) {
        self.touched.insert(key.to_vec());
        match state {
            KeyState::Present(value, version) => {
                self.entries.insert(key.to_vec(), (value, version));
            }
            KeyState::Absent => {
                self.entries.remove(key);
            }
        }
    }

    fn apply_leaf(&mut self, request: &Request) -> Option<Element> {
        match request {
            Request::Get(k) => Some(match self.read(k) {
                KeyState::Present(value, _) => Element::Found(value),
                KeyState::Absent => Element::NotFound,
            }),
            Request::GetV(k) => Some(match self.read(k) {
                KeyState::Present(value, version) => Element::Versioned(value, version),
                KeyState::Absent => Element::NotFound,
            }),
            Request::Set(k, v) => {
                self.write(k, v);
                None
            }
            Request::Del(k) => {
                self.delete(k);
                None
            }
            Request::PutV(k, v, expected) => {
                let current = self.state(k).version();
                if current == *expected {
                    Some(Element::Done(self.write(k, v)))
                } else {
                    self.count("version_conflicts");
                    self.touched.insert(k.clone());
                    Some(Element::VersionConflict(current))
                }
            }
            Request::Rm(k) => Some(Element::Done(u64::from(self.delete(k)))),
            Request::Atomic(_)
            | Request::Stats
            | Request::SlotMap
            | Request::SetTtl(..)
            | Request::Expire(..)
            | Request::Ttl(_)
            | Request::Persist(_)
            | Request::ExpireAt(..)
            | Request::SetKeepTtl(..)
            | Request::ExpireTime(_)
            | Request::SetAt(..)
            | Request::Scan { .. } => {
                panic!("the model does not predict {request:?} here")
            }
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    fn read(&mut self, key: &[u8]) -> KeyState {
        self.count("gets");
        self.touched.insert(key.to_vec());
        let found = self.state(key);
        self.count(match found {
            KeyState::Present(..) => "hits",
            KeyState::Absent => "misses",
        });
        found
    }

    fn write(&mut self, key: &[u8], value: &Value) -> u64 {
        self.count("sets");
        self.touched.insert(key.to_vec());
        let version = self.state(key).version() + 1;
        self.entries.insert(key.to_vec(), (value.clone(), version));
        version
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        self.count("deletes");
        self.touched.insert(key.to_vec());
        self.entries.remove(key).is_some()
    }
}

/// The reply frame a server sends for `elements`, byte for byte: values come
/// back exactly as the client library encoded them, and integers in their
/// smallest encoding, as rmpv writes them.
pub fn encode_reply(elements: &[Element]) -> Vec<u8> {
    let int = |n: i64| Value::from(n);
    let items: Vec<Value> = elements
        .iter()
        .map(|element| {
            Value::Array(match element {
                Element::Found(value) => vec![int(-1), value.clone()],
                Element::NotFound => vec![int(-2)],
                Element::Versioned(value, version) => {
                    vec![int(-3), value.clone(), (*version).into()]
                }
                Element::Done(n) => vec![int(-4), (*n).into()],
                Element::VersionConflict(current) => vec![int(-5), (*current).into()],
                Element::Keys { next, keys } => vec![
                    int(-7),
                    (*next).into(),
                    Value::Array(keys.iter().map(|k| Value::Binary(k.clone())).collect()),
                ],
                Element::Integer(n) => vec![int(-8), int(*n)],
                Element::Stats(stats) => vec![
                    int(-6),
                    Value::Map(
                        stats
                            .iter()
                            .map(|(name, n)| (Value::from(name.as_str()), Value::from(*n)))
                            .collect(),
                    ),
                ],
                Element::Error { code, message } => {
                    vec![int(-9), code.as_str().into(), message.as_str().into()]
                }
                Element::SlotMap { .. } => panic!("the model does not predict SLOTMAP"),
            })
        })
        .collect();
    super::frame(&super::pack(&Value::Array(items)))
}
