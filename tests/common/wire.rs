//! A raw connection to the server under test: it sends exactly the bytes it
//! is given and reads whole reply frames, for the tests that check bytes on
//! the wire or send what no client library would.
#![allow(dead_code)]

use super::{frame, REPLY_TIMEOUT};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Replies longer than this are taken for a broken length prefix.
const MAX_REPLY_BYTES: u64 = 1 << 30;

/// A TCP connection that speaks frames, nothing more. Reads and writes wait
/// at most [`REPLY_TIMEOUT`]: a guard against a hung test, not a timing
/// assertion.
pub struct RawConnection {
    pub stream: TcpStream,
}

impl RawConnection {
    pub fn connect(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        RawConnection { stream }
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// Reads one reply frame's body; the server must not close the connection first.
    pub fn reply(&mut self) -> Vec<u8> {
        match read_frame(&mut self.stream) {
            Ok(Some(body)) => body,
            Ok(None) => panic!("server closed the connection instead of replying"),
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    /// Sends one framed body and returns the reply's body.
    pub fn call(&mut self, body: &[u8]) -> Vec<u8> {
        self.send(&frame(body));
        self.reply()
    }

    /// Asserts the server closes the connection without sending anything more.
    pub fn expect_closed(&mut self) {
        match read_frame(&mut self.stream) {
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(Some(body)) => panic!("expected the connection to close, got a frame {body:02x?}"),
            Err(e) => panic!("expected the connection to close, got {e}"),
        }
    }
}

/// Reads one frame and returns its body. `Ok(None)` is a clean end of stream
/// at a frame boundary; a stream that ends inside a frame is an
/// `UnexpectedEof` error (a half-written frame), and an implausible length an
/// error too.
pub fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 8];
    if !fill(reader, &mut prefix, true)? {
        return Ok(None);
    }
    let len = u64::from_be_bytes(prefix);
    if len > MAX_REPLY_BYTES {
        return Err(io::Error::other(format!(
            "reply claims an implausible {len} bytes"
        )));
    }
    let mut body = vec![0u8; len as usize];
    fill(reader, &mut body, false)?;
    Ok(Some(body))
}

/// Fills `buf`; false if the stream ended before the first byte and `eof_ok`.
fn fill(reader: &mut impl Read, buf: &mut [u8], eof_ok: bool) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 && eof_ok => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {filled} of {} bytes", buf.len()),
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
