//! What each subcommand sends and what it got back: a parsed [`Command`]
//! becomes a [`Job`] (keys as bytes, `set`'s value read from its file or stdin
//! before any connection is made), and a job run against a
//! [`Client`] becomes an [`Outcome`] that `output` prints.
//!
//! Every job but `keys` is exactly one request message, so one round trip:
//! - `set`/`get`/`rm`: one SET / GET / RM (RM, not DEL, because it reports
//!   whether the key existed); `set --ttl`: one SET with a TTL.
//! - `expire`/`ttl`/`persist`: one EXPIRE / TTL / PERSIST.
//! - `mget`/`mrm`: one message of N GETs / RMs. Not atomic as a whole (a
//!   message never is); each key's result is exact.
//! - `mset`: one ATOMIC of N SETs, `[3, [[1,K1,V1], …]]`: all applied or none.
//! - `keys`: SCAN steps, shard by shard (opcode 9), as many round trips as
//!   the tables need.
//! - `stats`: one STATS.
//! - `ping`: one empty message `[]`, answered `[]`.
//! - `backup`: `POST /v1/backup` on the HTTP address instead ([`super::admin`]).
//!
//! A server error element becomes a [`CliError`]; nothing is retried.

use super::args::{Command, GetArgs, SetArgs, STDIN_VALUE};
use super::CliError;
use crate::client::{Client, ClientError, KeyTtl};
use crate::proto::message::{Element, Request};
use rmpv::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A subcommand ready to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Set {
        key: String,
        value: Value,
        ttl_ms: Option<u64>,
    },
    Expire {
        key: String,
        ttl_ms: u64,
    },
    Ttl {
        key: String,
    },
    Persist {
        key: String,
    },
    Get {
        key: String,
        raw: bool,
    },
    Rm {
        key: String,
    },
    Mget {
        keys: Vec<String>,
    },
    Mset {
        pairs: Vec<(String, String)>,
    },
    Keys {
        pattern: String,
    },
    Mrm {
        keys: Vec<String>,
    },
    Stats,
    Ping,
    Backup {
        dir: PathBuf,
        http_addr: String,
    },
}

/// What the server answered, per subcommand.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Set {
        key: String,
    },
    Get {
        key: String,
        value: Option<Value>,
        raw: bool,
    },
    Rm {
        key: String,
        existed: bool,
    },
    /// `(key, value)` in the order given; `None` = not found.
    Mget(Vec<(String, Option<Value>)>),
    Mset {
        keys: Vec<String>,
    },
    /// `(key, existed)` in the order given.
    Mrm(Vec<(String, bool)>),
    /// The keys listed, as UTF-8 (invalid bytes replaced).
    Keys(Vec<String>),
    Stats(BTreeMap<String, u64>),
    Pong {
        addr: SocketAddr,
        round_trip: Duration,
    },
    /// The server's report of the backup (docs/http.md).
    Backup(serde_json::Value),
    Expire {
        key: String,
        existed: bool,
    },
    Ttl {
        key: String,
        ttl: KeyTtl,
    },
    /// `removed`: the key had a deadline, and now has none.
    Persist {
        key: String,
        removed: bool,
    },
}

impl Job {
    /// Builds the job; reads `set`'s value from `--file` or stdin.
    pub fn from_command(command: &Command, stdin: &mut dyn Read) -> Result<Job, CliError> {
        Ok(match command {
            Command::Set(args) => Job::Set {
                key: args.key.clone(),
                value: set_value(args, stdin)?,
                ttl_ms: args.ttl,
            },
            Command::Expire(args) => Job::Expire {
                key: args.key.clone(),
                ttl_ms: args.duration,
            },
            Command::Ttl(args) => Job::Ttl {
                key: args.key.clone(),
            },
            Command::Persist(args) => Job::Persist {
                key: args.key.clone(),
            },
            Command::Get(GetArgs { key, raw }) => Job::Get {
                key: key.clone(),
                raw: *raw,
            },
            Command::Rm(args) => Job::Rm {
                key: args.key.clone(),
            },
            Command::Mget(args) => Job::Mget {
                keys: args.keys.clone(),
            },
            Command::Mset(args) => Job::Mset {
                pairs: args.pairs.clone(),
            },
            Command::Mrm(args) => Job::Mrm {
                keys: args.keys.clone(),
            },
            Command::Keys(args) => Job::Keys {
                pattern: args.pattern.clone().unwrap_or_default(),
            },
            Command::Stats => Job::Stats,
            Command::Ping => Job::Ping,
            Command::Backup(args) => Job::Backup {
                dir: args.dir.clone(),
                http_addr: args.http_addr.clone(),
            },
        })
    }

    /// Runs the job against the server at `addr` (backup: its HTTP address),
    /// waiting at most `timeout` for the connection and for the reply.
    pub fn execute(self, addr: &str, timeout: Duration) -> Result<Outcome, CliError> {
        if let Job::Backup { dir, http_addr } = &self {
            return super::admin::backup(http_addr, dir, timeout);
        }
        Client::connect(addr, Some(timeout))
            .map_err(CliError::from)
            .and_then(|mut client| self.run(&mut client))
            .map_err(|e| e.on_connection(addr, timeout))
    }

    /// Sends the job's one message and interprets the reply.
    pub fn run(self, client: &mut Client) -> Result<Outcome, CliError> {
        match self {
            Job::Set {
                key,
                value,
                ttl_ms: None,
            } => {
                client.set(key.as_bytes(), value)?;
                Ok(Outcome::Set { key })
            }
            Job::Set {
                key,
                value,
                ttl_ms: Some(ttl_ms),
            } => {
                client.set_with_ttl(key.as_bytes(), value, ttl_ms)?;
                Ok(Outcome::Set { key })
            }
            Job::Expire { key, ttl_ms } => {
                let existed = client.expire(key.as_bytes(), ttl_ms)?;
                Ok(Outcome::Expire { key, existed })
            }
            Job::Ttl { key } => {
                let ttl = client.ttl(key.as_bytes())?;
                Ok(Outcome::Ttl { key, ttl })
            }
            Job::Persist { key } => {
                let removed = client.persist(key.as_bytes())?;
                Ok(Outcome::Persist { key, removed })
            }
            Job::Get { key, raw } => {
                let value = client.get(key.as_bytes())?;
                Ok(Outcome::Get { key, value, raw })
            }
            Job::Rm { key } => {
                let existed = client.rm(key.as_bytes())?;
                Ok(Outcome::Rm { key, existed })
            }
            Job::Mget { keys } => mget(client, keys),
            Job::Mset { pairs } => mset(client, pairs),
            Job::Mrm { keys } => mrm(client, keys),
            Job::Keys { pattern } => {
                let keys = client.keys(pattern.as_bytes())?;
                let keys = keys.iter().map(|k| String::from_utf8_lossy(k).into_owned());
                Ok(Outcome::Keys(keys.collect()))
            }
            Job::Stats => Ok(Outcome::Stats(client.stats()?)),
            Job::Ping => ping(client),
            Job::Backup { .. } => Err(CliError::Usage(
                "backup goes through the HTTP API, not a msgpack connection".into(),
            )),
        }
    }
}

/// A command-line VALUE is a msgpack str; `-` and `--file` give raw bytes (bin).
fn set_value(args: &SetArgs, stdin: &mut dyn Read) -> Result<Value, CliError> {
    let read_error = |from: String| move |error| CliError::ReadValue { from, error };
    match (&args.value, &args.file) {
        (_, Some(path)) => std::fs::read(path)
            .map(Value::Binary)
            .map_err(read_error(path.display().to_string())),
        (Some(value), None) if value == STDIN_VALUE => {
            let mut bytes = Vec::new();
            stdin
                .read_to_end(&mut bytes)
                .map_err(read_error("stdin".into()))?;
            Ok(Value::Binary(bytes))
        }
        (Some(value), None) => Ok(Value::from(value.as_str())),
        // clap's required "source" group makes this unreachable.
        (None, None) => unreachable!("set without VALUE or --file passed argument parsing"),
    }
}

/// One empty message: the server answers an empty array.
fn ping(client: &mut Client) -> Result<Outcome, CliError> {
    let started = Instant::now();
    let elements = client.call(&[])?;
    let round_trip = started.elapsed();
    if !elements.is_empty() {
        return Err(CliError::Protocol(format!(
            "an empty message was answered with {} elements",
            elements.len()
        )));
    }
    Ok(Outcome::Pong {
        addr: client.peer_addr(),
        round_trip,
    })
}

fn mget(client: &mut Client, keys: Vec<String>) -> Result<Outcome, CliError> {
    let requests: Vec<Request> = keys
        .iter()
        .map(|k| Request::Get(k.clone().into()))
        .collect();
    let elements = per_key_elements(client.call(&requests)?, &keys)?;
    let values = keys
        .into_iter()
        .zip(elements)
        .map(|(key, element)| match element {
            Element::Found(value) => Ok((key, Some(value))),
            Element::NotFound => Ok((key, None)),
            other => Err(unexpected("GET", &other)),
        })
        .collect::<Result<_, _>>()?;
    Ok(Outcome::Mget(values))
}

fn mrm(client: &mut Client, keys: Vec<String>) -> Result<Outcome, CliError> {
    let requests: Vec<Request> = keys.iter().map(|k| Request::Rm(k.clone().into())).collect();
    let elements = per_key_elements(client.call(&requests)?, &keys)?;
    let existed = keys
        .into_iter()
        .zip(elements)
        .map(|(key, element)| match element {
            Element::Done(n) => Ok((key, n == 1)),
            other => Err(unexpected("RM", &other)),
        })
        .collect::<Result<_, _>>()?;
    Ok(Outcome::Mrm(existed))
}

/// One ATOMIC of SETs. Success has no element (SETs have none); an abort is
/// one error element and, by the ATOMIC contract, changed nothing.
fn mset(client: &mut Client, pairs: Vec<(String, String)>) -> Result<Outcome, CliError> {
    let sets = pairs
        .iter()
        .map(|(k, v)| Request::Set(k.clone().into(), Value::from(v.as_str())))
        .collect();
    let mut elements = client.call(&[Request::Atomic(sets)])?;
    match (elements.pop(), elements.is_empty()) {
        (None, _) => Ok(Outcome::Mset {
            keys: pairs.into_iter().map(|(k, _)| k).collect(),
        }),
        (Some(Element::Error { code, message }), true) => Err(CliError::Aborted { code, message }),
        _ => Err(CliError::Protocol(
            "mset: expected no result element or one error element".into(),
        )),
    }
}

/// Checks that a reply has one element per key. A server error element fails
/// the command: naming its key when the reply is per key, or as a whole when
/// the message was refused before running (a single error element).
fn per_key_elements(elements: Vec<Element>, keys: &[String]) -> Result<Vec<Element>, CliError> {
    let per_key = elements.len() == keys.len();
    for (i, element) in elements.iter().enumerate() {
        if let Element::Error { code, message } = element {
            return Err(match (per_key, keys.get(i)) {
                (true, Some(key)) => CliError::KeyError {
                    key: key.clone(),
                    code: code.clone(),
                    message: message.clone(),
                },
                _ => CliError::from(ClientError::Server {
                    code: code.clone(),
                    message: message.clone(),
                }),
            });
        }
    }
    if !per_key {
        return Err(CliError::Protocol(format!(
            "{} result elements for {} keys",
            elements.len(),
            keys.len()
        )));
    }
    Ok(elements)
}

fn unexpected(op: &str, element: &Element) -> CliError {
    CliError::Protocol(format!("unexpected {op} result {element:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::Cli;
    use clap::Parser;
    use std::path::PathBuf;

    fn job(args: &[&str], stdin: &[u8]) -> Result<Job, CliError> {
        let cli = Cli::try_parse_from(args).expect("valid command line");
        Job::from_command(&cli.command, &mut &stdin[..])
    }

    #[test]
    fn command_line_values_are_str_and_stdin_values_are_bin() {
        let set = |value: Value| Job::Set {
            key: "k".into(),
            value,
            ttl_ms: None,
        };
        assert_eq!(
            job(&["corekv", "set", "k", "v"], b"").ok(),
            Some(set("v".into()))
        );
        assert_eq!(
            job(&["corekv", "set", "k", "-"], b"\0\xff").ok(),
            Some(set(Value::Binary(vec![0, 0xff])))
        );
    }

    #[test]
    fn ttl_flags_and_durations_become_milliseconds() {
        assert_eq!(
            job(&["corekv", "set", "k", "v", "--ttl", "1.5s"], b"").ok(),
            Some(Job::Set {
                key: "k".into(),
                value: "v".into(),
                ttl_ms: Some(1500)
            })
        );
        assert_eq!(
            job(&["corekv", "expire", "k", "2m"], b"").ok(),
            Some(Job::Expire {
                key: "k".into(),
                ttl_ms: 120_000
            })
        );
    }

    #[test]
    fn a_missing_value_file_is_an_error_naming_the_path() {
        let missing = PathBuf::from("/nonexistent/corekv-test-value");
        let err = job(
            &[
                "corekv",
                "set",
                "k",
                "--file",
                missing.to_str().expect("utf-8"),
            ],
            b"",
        )
        .expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/corekv-test-value"));
    }

    #[test]
    fn a_reply_with_an_error_element_names_the_key() {
        let keys = vec!["a".to_owned(), "b".to_owned()];
        let elements = vec![
            Element::NotFound,
            Element::Error {
                code: "OOM".into(),
                message: "full".into(),
            },
        ];
        let err = per_key_elements(elements, &keys).expect_err("error element");
        assert_eq!(err.to_string(), "server error OOM on key 'b': full");
    }

    #[test]
    fn a_reply_with_the_wrong_number_of_elements_is_a_protocol_error() {
        let keys = vec!["a".to_owned(), "b".to_owned()];
        let err = per_key_elements(vec![Element::NotFound], &keys).expect_err("short reply");
        assert!(matches!(err, CliError::Protocol(_)), "{err:?}");
    }
}
