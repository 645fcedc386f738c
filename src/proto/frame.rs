//! Length-prefixed framing: every message, both directions, is an 8-byte
//! big-endian unsigned length followed by that many bytes of msgpack.
//!
//! ```text
//! +--------+--------+-----+--------+------------------------------+
//! | len[0] | len[1] | ... | len[7] | body: `len` bytes of msgpack |
//! +--------+--------+-----+--------+------------------------------+
//!   big-endian u64
//! ```
//!
//! [`next_frame`] looks at the front of a receive buffer and says whether a
//! complete frame is there. "Need more bytes" is `Ok(None)`, not an error; the
//! only error is a declared length above the limit, which the caller answers with
//! TOOBIG and then closes the connection (the stream cannot be resynchronised).

use std::ops::Range;

/// Bytes in the length prefix.
pub const LEN_PREFIX_BYTES: usize = 8;

/// A frame announced more bytes than the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "frame of {declared} bytes exceeds the limit of {max_frame_bytes} bytes (--max-frame-bytes)"
)]
pub struct FrameTooBig {
    pub declared: u64,
    pub max_frame_bytes: u64,
}

/// A complete frame found at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where the msgpack body lies in the buffer.
    pub body: Range<usize>,
}

impl Frame {
    /// Bytes the frame occupies in the buffer, prefix included.
    pub fn total_len(&self) -> usize {
        self.body.end
    }
}

/// Looks for one complete frame at the start of `buf`.
pub fn next_frame(buf: &[u8], max_frame_bytes: u64) -> Result<Option<Frame>, FrameTooBig> {
    let Some(prefix) = buf.get(..LEN_PREFIX_BYTES) else {
        return Ok(None);
    };
    let declared = u64::from_be_bytes(prefix.try_into().expect("slice of 8 bytes"));
    if declared > max_frame_bytes {
        return Err(FrameTooBig {
            declared,
            max_frame_bytes,
        });
    }
    // declared <= max_frame_bytes, which the config keeps well below usize::MAX.
    let end = LEN_PREFIX_BYTES + declared as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame {
        body: LEN_PREFIX_BYTES..end,
    }))
}

/// Appends the length prefix for a body of `body_len` bytes.
pub fn write_prefix(out: &mut Vec<u8>, body_len: usize) {
    out.extend_from_slice(&(body_len as u64).to_be_bytes());
}

/// Reserves room for a length prefix to be filled in by [`finish_frame`] once the
/// body has been written after it; returns where the prefix starts.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX_BYTES]);
    start
}

/// Fills in the prefix reserved by [`begin_frame`] with the length of what follows it.
pub fn finish_frame(out: &mut [u8], start: usize) {
    let body_len = (out.len() - start - LEN_PREFIX_BYTES) as u64;
    out[start..start + LEN_PREFIX_BYTES].copy_from_slice(&body_len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_prefix_and_body_need_more_bytes() {
        assert_eq!(next_frame(&[0, 0, 0], 100), Ok(None));
        assert_eq!(next_frame(&[0, 0, 0, 0, 0, 0, 0, 2, 0x90], 100), Ok(None));
    }

    #[test]
    fn complete_frame_is_found_and_trailing_bytes_are_left() {
        let buf = [0, 0, 0, 0, 0, 0, 0, 1, 0x90, 0xff];
        let frame = next_frame(&buf, 100)
            .expect("within limit")
            .expect("complete");
        assert_eq!(frame.body, 8..9);
        assert_eq!(frame.total_len(), 9);
    }

    #[test]
    fn declared_length_above_limit_is_too_big() {
        let buf = u64::MAX.to_be_bytes();
        assert_eq!(
            next_frame(&buf, 1024),
            Err(FrameTooBig {
                declared: u64::MAX,
                max_frame_bytes: 1024
            })
        );
    }

    #[test]
    fn begin_and_finish_frame_write_the_body_length() {
        let mut out = vec![0xaa];
        let start = begin_frame(&mut out);
        out.extend_from_slice(&[0x92, 0x01, 0x02]);
        finish_frame(&mut out, start);
        assert_eq!(out, [0xaa, 0, 0, 0, 0, 0, 0, 0, 3, 0x92, 0x01, 0x02]);
    }
}
