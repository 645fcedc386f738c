//! The HTTP port while the logs are replayed: every request gets a 503.
//!
//! Recovery runs before the shards exist, so nothing could serve the HTTP API
//! yet. [`Recovering::start`] binds the HTTP address (SO_REUSEPORT and
//! SO_REUSEADDR, like the shards' listeners: [`crate::server::bind`]) before recovery begins and serves it from a temporary
//! glommio executor on its own thread: `/health` answers
//! `503 {"status":"recovering"}`, every other path `503 {"error":…,
//! "code":"RECOVERING"}`, each with `Connection: close`.
//!
//! Handover, without refusing or resetting a connection: [`Recovering::stop`]
//! makes the accept loop stop (it polls a non-blocking accept, so no accept is
//! ever in flight in the kernel when it stops) and hands the listening socket
//! back *still open*. The first shard to bind the HTTP address adopts that
//! socket ([`super::HttpPlan::bind`]); the others bind their own. Connections
//! that arrive between the stop and that shard's first accept wait in the
//! socket's backlog and are answered by the shard, after recovery. So from the
//! "http recovering on" log line to shutdown, a connection to the HTTP port is
//! never refused: a request gets either a 503 from here or a real answer from
//! a shard. Connections this server accepted before the stop are still
//! answered (503, within `FINISH_TIMEOUT`, 5 s) on its thread, which then
//! ends by itself.
//!
//! The executor is watched by a wake guard of its own (`net::wake_guard`;
//! the server's starts only after recovery): glommio's sleep missing its
//! accept-poll timer would otherwise leave the stop unseen and the server's
//! start waiting for the socket for ever.

use super::compat::HyperStream;
use super::routes::{json_response, Response};
use crate::net::wake_guard::{self, GuardThread, WakeGuard};
use glommio::{LocalExecutorBuilder, Placement};
use hyper::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use hyper::StatusCode;
use serde_json::json;
use std::cell::Cell;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How often the accept loop looks for connections (and for the stop flag).
const ACCEPT_POLL: Duration = Duration::from_millis(2);
/// How long connections accepted before the stop may take to send their request.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The executor does no file I/O; the least glommio accepts.
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// The 503 server on the HTTP address while recovery runs.
#[derive(Debug)]
pub struct Recovering {
    stop: Arc<AtomicBool>,
    /// Where the accept loop hands the listening socket back when it stops.
    handback: mpsc::Receiver<TcpListener>,
    /// The socket once handed back (`None` if the thread died).
    stopped: Option<Option<TcpListener>>,
    /// Interrupts the executor if its beat (the accept loop) stands still.
    _guard: GuardThread,
}

impl Recovering {
    /// Binds `addr` ([`crate::server::bind`]) and starts answering 503 on it; logs
    /// "http recovering on IP:PORT". At most `max_connections` are served at once.
    pub fn start(addr: SocketAddr, max_connections: usize) -> std::io::Result<Recovering> {
        let listener = bind(addr)?;
        let guard = Arc::new(WakeGuard::default());
        let guard_thread = wake_guard::start(guard.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, handback) = mpsc::sync_channel(1);
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("corekv-http-recovering".into())
            .spawn(move || {
                let executor = LocalExecutorBuilder::new(Placement::Unbound)
                    .name("corekv-http-recovering")
                    .io_memory(IO_MEMORY_BYTES)
                    .make();
                match executor {
                    Ok(executor) => {
                        executor.run(async move {
                            let beat = Arc::new(AtomicU64::new(0));
                            let _watching = guard.watch("http-recovering".into(), beat.clone());
                            serve(listener, (thread_stop, beat), tx, max_connections).await
                        });
                    }
                    Err(e) => {
                        // Connections wait in the backlog until a shard serves them.
                        tracing::warn!("http: no 503 answers during recovery: {e}");
                        let _ = tx.send(listener);
                    }
                }
            })?;
        tracing::info!("http recovering on {addr} (503 until recovery completes)");
        Ok(Recovering {
            stop,
            handback,
            stopped: None,
            _guard: guard_thread,
        })
    }

    /// Stops accepting and waits (one poll period) for the listening socket.
    pub fn stop(&mut self) {
        if self.stopped.is_none() {
            self.stop.store(true, Ordering::Release);
            self.stopped = Some(self.handback.recv().ok());
        }
    }

    /// The listening socket, still open with its backlog, for a shard to adopt.
    pub fn into_listener(mut self) -> Option<TcpListener> {
        self.stop();
        self.stopped.take().flatten()
    }
}

impl Drop for Recovering {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The shared listener, non-blocking: the accept loop polls it, so no accept
/// is ever in flight in the kernel when it stops.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = crate::server::bind::shared_listener(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The accept loop; each of its turns bumps `beat` for the wake guard.
async fn serve(
    listener: TcpListener,
    (stop, beat): (Arc<AtomicBool>, Arc<AtomicU64>),
    handback: mpsc::SyncSender<TcpListener>,
    max_connections: usize,
) {
    let live = Rc::new(Cell::new(0usize));
    while !stop.load(Ordering::Acquire) {
        beat.fetch_add(1, Ordering::Relaxed);
        match listener.accept() {
            Ok((stream, _)) if live.get() >= max_connections => {
                let stream = to_glommio(stream);
                glommio::spawn_local(super::refuse(stream, max_connections)).detach();
            }
            Ok((stream, _)) => {
                live.set(live.get() + 1);
                let live = live.clone();
                let stream = to_glommio(stream);
                glommio::spawn_local(async move {
                    serve_connection(stream).await;
                    live.set(live.get() - 1);
                })
                .detach();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                glommio::timer::sleep(ACCEPT_POLL).await;
            }
            Err(e) => {
                tracing::warn!("http accept failed during recovery: {e}");
                glommio::timer::sleep(super::ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
    // The shard that adopts the socket accepts with io_uring, which wants it blocking.
    if let Err(e) = listener.set_nonblocking(false) {
        tracing::warn!("http: cannot make the listener blocking again: {e}");
    }
    let _ = handback.send(listener);
    let deadline = Instant::now() + FINISH_TIMEOUT;
    while live.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(ACCEPT_POLL).await;
    }
}

fn to_glommio(stream: std::net::TcpStream) -> glommio::net::TcpStream {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    crate::sys::adopt_stream(stream)
}

/// One request, answered 503, then the connection closes.
async fn serve_connection(stream: glommio::net::TcpStream) {
    let service =
        hyper::service::service_fn(|request| async move { Ok::<_, Infallible>(answer(&request)) });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(HyperStream(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!("http connection during recovery closed: {e}");
    }
}

fn answer<B>(request: &hyper::Request<B>) -> Response {
    let body = if request.uri().path() == "/health" {
        json!({ "status": "recovering" })
    } else {
        json!({
            "error": "recovering: the server is replaying its logs; retry when /health answers 200",
            "code": "RECOVERING",
        })
    };
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read");
        reply
    }

    #[test]
    fn answers_503_then_hands_over_the_socket_with_its_backlog() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let mut recovering = Recovering::start(port, 16).expect("start");
        let health = get(port, "/health");
        assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
        assert!(health.ends_with(r#"{"status":"recovering"}"#), "{health}");
        assert!(health.to_ascii_lowercase().contains("connection: close"));
        let other = get(port, "/v1/get?key=a");
        assert!(other.starts_with("HTTP/1.1 503 "), "{other}");
        assert!(other.contains(r#""code":"RECOVERING""#), "{other}");

        // Stopped: a connection is queued, not refused, and the adopter answers it.
        recovering.stop();
        let mut waiting = std::net::TcpStream::connect(port).expect("connect while stopped");
        waiting
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        let listener = recovering.into_listener().expect("the socket comes back");
        let served = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(IO_MEMORY_BYTES)
                .make()
                .expect("executor")
                .run(async move {
                    let listener = crate::server::bind::adopt(listener);
                    let mut stream = listener.accept().await.expect("accept");
                    let mut buf = [0u8; 64];
                    let n = futures_lite::AsyncReadExt::read(&mut stream, &mut buf)
                        .await
                        .expect("read");
                    assert!(buf[..n].starts_with(b"GET /health"));
                    futures_lite::AsyncWriteExt::write_all(&mut stream, b"adopted")
                        .await
                        .expect("write");
                })
        });
        let mut reply = String::new();
        waiting
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        waiting.read_to_string(&mut reply).expect("read");
        assert_eq!(reply, "adopted");
        served.join().expect("adopter");
    }
}
