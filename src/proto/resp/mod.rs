//! RESP (the Redis protocol, versions 2 and 3): the sans-IO half.
//!
//! - [`parse`]: commands (arrays of bulk strings) out of a receive buffer.
//! - [`command`]: arguments → a typed [`command::Command`], Redis's error texts.
//! - [`requests`]: the msgpack requests a command is translated into.
//! - [`elements`]: result elements read back as typed outcomes.
//! - [`value`]: how stored values read as Redis strings, and back.
//! - [`encode`]: RESP2/RESP3 replies.
//! - [`glob`]: Redis glob patterns (CONFIG GET).
//!
//! The server side (`server::resp`) runs the translated requests through the
//! same round as msgpack; docs/protocol.md documents the mapping.

pub mod command;
pub mod elements;
pub mod encode;
pub mod glob;
pub mod parse;
pub mod requests;
pub mod value;

pub use command::{Command, CommandError};
pub use encode::Version;
pub use parse::{parse_command, CommandParser, ProtocolError, RespLimits};
