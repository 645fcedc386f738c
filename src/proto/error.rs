//! Wire error codes: the one place where a failure becomes the CODE string of an
//! `[-9, CODE, message]` element.
//!
//! Every error element is written by [`crate::proto::reply::write_error`],
//! which counts it by code in a tally of the writing thread
//! ([`errors_written`]). A shard is one thread, so each shard counts the
//! errors it writes without sharing anything; it publishes its tally for
//! `/metrics` (`crate::metrics`).

use std::cell::Cell;

/// The CODE of an error element, as BRIEF §3 lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame's bytes are not exactly one msgpack value.
    BadFrame,
    /// Valid msgpack that is not a valid request message.
    BadReq,
    /// A length prefix or a key above its limit.
    TooBig,
    /// An ATOMIC batch aborted on a version conflict.
    Conflict,
    /// A write refused because the server is over its memory or connection limit.
    Oom,
    /// The storage layer failed (poisoned log, failed sync).
    IoErr,
    /// The server is shutting down and did not run the request.
    Shutdown,
    /// INCRBY, INCRBYFLOAT or APPEND on a value that is not a string or an
    /// integer.
    WrongType,
    /// INCRBY or INCRBYFLOAT on a string that is not a number of its kind,
    /// or a result out of range (past i64, or not finite).
    NotANumber,
    /// On a cluster node: a key of the message is in a hash slot another
    /// node owns; the message is `"<slot> <ip:port>"` of that node.
    Moved,
}

impl ErrorCode {
    /// Every code, in the order of [`errors_written`].
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadFrame,
        ErrorCode::BadReq,
        ErrorCode::TooBig,
        ErrorCode::Conflict,
        ErrorCode::Oom,
        ErrorCode::IoErr,
        ErrorCode::Shutdown,
        ErrorCode::WrongType,
        ErrorCode::NotANumber,
        ErrorCode::Moved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BADFRAME",
            ErrorCode::BadReq => "BADREQ",
            ErrorCode::TooBig => "TOOBIG",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Oom => "OOM",
            ErrorCode::IoErr => "IOERR",
            ErrorCode::Shutdown => "SHUTDOWN",
            ErrorCode::WrongType => "WRONGTYPE",
            ErrorCode::NotANumber => "NOTNUM",
            ErrorCode::Moved => "MOVED",
        }
    }

    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

thread_local! {
    /// Error elements this thread has written, by [`ErrorCode::ALL`] index.
    static ERRORS_WRITTEN: [Cell<u64>; ErrorCode::ALL.len()] =
        const { [const { Cell::new(0) }; ErrorCode::ALL.len()] };
}

/// Counts one error element written by this thread.
pub(crate) fn count_written(code: ErrorCode) {
    ERRORS_WRITTEN.with(|tally| {
        let cell = &tally[code as usize];
        cell.set(cell.get() + 1);
    });
}

/// The error elements this thread has written so far, by [`ErrorCode::ALL`]
/// index.
pub fn errors_written() -> [u64; ErrorCode::ALL.len()] {
    ERRORS_WRITTEN.with(|tally| std::array::from_fn(|i| tally[i].get()))
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request message that was refused as a whole: nothing in it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_counted_under_its_own_index() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i);
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        let before = errors_written();
        let mut out = Vec::new();
        crate::proto::reply::write_error(&mut out, ErrorCode::Conflict, "k");
        crate::proto::reply::write_error(&mut out, ErrorCode::Conflict, "k");
        let after = errors_written();
        assert_eq!(after[ErrorCode::Conflict as usize], before[3] + 2);
        assert_eq!(after[ErrorCode::Oom as usize], before[4]);
    }
}
