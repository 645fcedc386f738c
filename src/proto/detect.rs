//! Which protocol a connection speaks, from its first byte. One port serves
//! all three:
//!
//! | first byte | protocol |
//! |---|---|
//! | `0x00` (a length prefix's high byte) | msgpack (`proto::frame`) |
//! | `*` | RESP (`proto::resp`) |
//! | an ASCII letter | the text protocol (`proto::text`) |
//!
//! Any other byte goes to msgpack, whose length prefix is then at least
//! 2^56 bytes: the client gets msgpack's TOOBIG reply and the connection
//! closes, as before there was more than one protocol.

/// The protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Msgpack,
    Resp,
    Text,
}

impl Protocol {
    pub fn of_first_byte(byte: u8) -> Protocol {
        match byte {
            b'*' => Protocol::Resp,
            b if b.is_ascii_alphabetic() => Protocol::Text,
            _ => Protocol::Msgpack,
        }
    }
}
