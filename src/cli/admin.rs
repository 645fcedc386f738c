//! The subcommands that go through the server's HTTP API rather than the
//! msgpack port (`backup`), over a minimal blocking HTTP/1.1 client: one
//! POST with a JSON body, `Connection: close`, the whole response read.

use super::commands::Outcome;
use super::CliError;
use crate::client::connect_stream;
use serde_json::{json, Value as Json};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

/// `POST /v1/backup {"dir": DIR}` (docs/http.md).
pub fn backup(http_addr: &str, dir: &Path, timeout: Duration) -> Result<Outcome, CliError> {
    let dir = dir.to_str().ok_or_else(|| {
        CliError::Usage(format!(
            "{} is not UTF-8, which the HTTP API cannot carry",
            dir.display()
        ))
    })?;
    let (status, reply) = post_json(http_addr, "/v1/backup", &json!({ "dir": dir }), timeout)?;
    if status == 200 {
        return Ok(Outcome::Backup(reply));
    }
    let field = |name: &str| reply[name].as_str().unwrap_or("").to_owned();
    Err(CliError::Server {
        code: field("code"),
        message: field("error"),
    })
}

/// Sends one POST and returns the status and the JSON body.
fn post_json(
    addr: &str,
    path: &str,
    body: &Json,
    timeout: Duration,
) -> Result<(u16, Json), CliError> {
    let (mut stream, _) = connect_stream(&addr, Some(timeout))?;
    let mut exchange = || -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let body = body.to_string();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response)
    };
    let response = exchange().map_err(|e| CliError::Io(e).on_connection(addr, timeout))?;
    parse_response(&response).ok_or_else(|| {
        CliError::Protocol(format!(
            "{addr} did not answer as corekv's HTTP API: is it the server's --http-addr?"
        ))
    })
}

/// The status and JSON body of a whole HTTP/1.1 response.
fn parse_response(response: &[u8]) -> Option<(u16, Json)> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let status = head
        .strip_prefix("HTTP/1.")?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    let body = serde_json::from_slice(&response[split + 4..]).ok()?;
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_gives_its_status_and_json_body() {
        let response = b"HTTP/1.1 409 Conflict\r\ncontent-length: 15\r\n\r\n{\"code\":\"BUSY\"}";
        let (status, body) = parse_response(response).expect("a response");
        assert_eq!(status, 409);
        assert_eq!(body["code"], "BUSY");
        assert!(parse_response(b"\0\0\0\0\0\0\0\x01\x90").is_none());
    }
}
