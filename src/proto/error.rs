//! Wire error codes: the one place where a failure becomes the CODE string of an
//! `[-9, CODE, message]` element.

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
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BADFRAME",
            ErrorCode::BadReq => "BADREQ",
            ErrorCode::TooBig => "TOOBIG",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Oom => "OOM",
            ErrorCode::IoErr => "IOERR",
            ErrorCode::Shutdown => "SHUTDOWN",
        }
    }

    pub fn parse(code: &str) -> Option<ErrorCode> {
        let all = [
            ErrorCode::BadFrame,
            ErrorCode::BadReq,
            ErrorCode::TooBig,
            ErrorCode::Conflict,
            ErrorCode::Oom,
            ErrorCode::IoErr,
            ErrorCode::Shutdown,
        ];
        all.into_iter().find(|c| c.as_str() == code)
    }
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
