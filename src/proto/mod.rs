//! The wire protocol, and the only code that knows msgpack: framing, request
//! decoding and validation, reply encoding, error codes, STATS, and the typed
//! messages the clients build. No I/O happens here.
//!
//! - [`detect`]: the protocol of a connection, from its first byte.
//! - [`frame`]: the 8-byte big-endian length prefix around every message.
//! - [`msgpack`]: a bounds-checked, allocation-free msgpack reader.
//! - [`request`]: a request message → validated [`Op`]s pointing into the buffer.
//! - [`reply`]: result elements and reply messages.
//! - [`results`]: a batch's result elements, with values shared rather than copied.
//! - [`message`]: the typed model — [`Request`](message::Request)s and reply
//!   [`Element`](message::Element)s as values, with their encoding — that the
//!   client library, the CLI, the HTTP API and the load generator share.
//! - [`stats`]: the counters STATS reports, and a shard's share of them.
//! - [`error`]: the `[-9, CODE, message]` codes, chosen in one place.
//! - [`resp`]: the Redis protocol (RESP2/RESP3) and [`text`], the plain-text
//!   protocol: commands translated into the requests above, replies read back.
//!
//! docs/protocol.md describes the protocol byte by byte.

pub mod detect;
pub mod error;
pub mod frame;
pub mod message;
pub mod msgpack;
pub mod reply;
pub mod request;
pub mod resp;
pub mod results;
pub mod stats;
pub mod text;

pub use error::{ErrorCode, RequestError};
pub use frame::{next_frame, Frame, FrameTooBig, LEN_PREFIX_BYTES};
pub use request::{decode_message, Op, OpKind, RequestLimits, ShardTarget, Span};
pub use results::{BatchResults, ElementRef, Piece};
