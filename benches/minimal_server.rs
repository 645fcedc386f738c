//! A minimal key/value server in three network variants, to measure what the
//! network path alone costs per message.
//!
//! Every variant runs the same request code ([`store`]): frames of corekv's
//! msgpack protocol decoded with `corekv::proto`, SET and GET (and the DEL and
//! PUTV the load generator's mixed workload starts with) on one `HashMap`,
//! replies encoded with `corekv::proto::reply`.
//! What differs is only how sockets are served, all on one thread:
//!
//! - `glommio`: one glommio executor, `glommio::net::TcpListener` and one task
//!   per connection reading and writing a glommio `TcpStream` (how corekv
//!   served sockets before it had a network ring of its own).
//! - `epoll`: a plain level-triggered epoll loop, no glommio: each pass reads
//!   every ready socket once, serves what it read, and writes every reply at
//!   the end of the pass, as Redis does.
//! - `ring`: one glommio executor serving sockets through corekv's own
//!   `corekv::net` (a `NetRing` and its poller task, a `NetListener`,
//!   one task per connection reading and writing a `NetStream`): corekv's
//!   current network path.
//!
//! # Usage
//!
//! ```text
//! taskset -c 1 cargo bench --bench minimal_server -- --variant epoll --addr 127.0.0.1:4100
//! ```
//!
//! serves until killed. The server pins nothing itself: pin it with `taskset`
//! (above). Without `--variant` it exits at once, so a plain `cargo bench`
//! (which runs every bench) goes on to the other benches.
//! `benches/minimal_server.sh` starts each variant pinned to one CPU, drives it
//! with `corekv-loadgen` pinned to another, and prints ops/s, the server's CPU
//! time per message and the rescheduling interrupts per message on its CPU.
//!
//! A message holding other requests (ATOMIC, GETV, RM, STATS) is refused
//! (`[[-9, "BADREQ", …]]`), as is a malformed one; a frame over the limit
//! closes its connection.

use clap::{Parser, ValueEnum};
use std::net::{SocketAddr, TcpListener};

/// A frame larger than this closes its connection (corekv's default limit).
const MAX_FRAME_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest free space offered to each read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The minimal server, in the network variant given.
#[derive(Debug, Parser)]
struct Args {
    /// How sockets are served; without it, exit at once.
    #[arg(long, value_enum)]
    variant: Option<Variant>,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4100")]
    addr: SocketAddr,

    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,

    /// Benchmark name filters `cargo bench -- FILTER` passes to every bench; ignored.
    #[arg(hide = true)]
    filters: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    Glommio,
    Epoll,
    Ring,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(variant) = args.variant else {
        eprintln!("minimal_server: no --variant given, nothing to serve");
        return Ok(());
    };
    let listener = corekv::server::bind::shared_listener(args.addr)?;
    eprintln!(
        "minimal_server: {variant:?} serving {} (pid {})",
        listener.local_addr()?,
        std::process::id()
    );
    serve(variant, listener)
}

/// Serves `listener` (a blocking socket) on this thread, forever.
pub fn serve(variant: Variant, listener: TcpListener) -> anyhow::Result<()> {
    match variant {
        Variant::Glommio => glommio_tcp::serve(listener),
        Variant::Epoll => epoll::serve(listener),
        Variant::Ring => ring::serve(listener),
    }
}

mod store {
    //! The request code every variant runs: framing, decoding, a hash map,
    //! reply encoding. No I/O.
    //!
    //! GET and SET are the workloads' requests. DEL and PUTV are here only
    //! because the load generator's mixed workload (`--get-ratio`) first
    //! writes every key with a DEL and a PUTV at version 0; a version kept
    //! with each value is all they need.

    use super::MAX_FRAME_BYTES;
    use corekv::proto::frame::{begin_frame, finish_frame};
    use corekv::proto::{
        decode_message, next_frame, reply, ErrorCode, FrameTooBig, Op, OpKind, RequestLimits,
    };
    use std::collections::HashMap;

    const LIMITS: RequestLimits = RequestLimits {
        max_key_bytes: 64 * 1024,
    };

    /// A value (its msgpack encoding, returned as it came) and its version:
    /// each write makes it one more, a key written first is at 1.
    struct Stored {
        value: Vec<u8>,
        version: u64,
    }

    #[derive(Default)]
    pub struct Store {
        map: HashMap<Vec<u8>, Stored>,
        /// Scratch space for one message's requests.
        ops: Vec<Op>,
    }

    impl Store {
        /// Serves every complete frame at the front of `inbuf`, appending one
        /// reply frame per message to `out`; returns the bytes consumed. A
        /// frame over the limit is an error: the stream cannot go on.
        pub fn serve(&mut self, inbuf: &[u8], out: &mut Vec<u8>) -> Result<usize, FrameTooBig> {
            let mut consumed = 0;
            while let Some(frame) = next_frame(&inbuf[consumed..], MAX_FRAME_BYTES)? {
                let body = consumed + frame.body.start..consumed + frame.body.end;
                self.serve_message(inbuf, body, out);
                consumed += frame.total_len();
            }
            Ok(consumed)
        }

        fn serve_message(&mut self, buf: &[u8], body: std::ops::Range<usize>, out: &mut Vec<u8>) {
            let start = begin_frame(out);
            self.ops.clear();
            match decode_message(buf, body, &LIMITS, &mut self.ops) {
                Err(refusal) => refuse(out, refusal.code, &refusal.message),
                Ok(()) if self.ops.iter().any(|op| !is_served(op.kind)) => refuse(
                    out,
                    ErrorCode::BadReq,
                    "the minimal server serves GET, SET, DEL and PUTV only",
                ),
                Ok(()) => {
                    let nr_elements = self.ops.iter().filter(|op| has_element(op.kind)).count();
                    reply::write_array_len(out, nr_elements as u32);
                    for op in &self.ops {
                        execute(&mut self.map, buf, op, out);
                    }
                }
            }
            finish_frame(out, start);
        }
    }

    /// Runs `op`, appending its result element (if it has one) to `out`.
    fn execute(map: &mut HashMap<Vec<u8>, Stored>, buf: &[u8], op: &Op, out: &mut Vec<u8>) {
        let key = op.key.of(buf);
        match op.kind {
            OpKind::Get => match map.get(key) {
                Some(stored) => reply::write_found(out, &stored.value),
                None => reply::write_not_found(out),
            },
            OpKind::Set => {
                write(map, key, op.value.of(buf));
            }
            OpKind::Del => {
                map.remove(key);
            }
            OpKind::PutV => {
                let current = map.get(key).map_or(0, |stored| stored.version);
                match op.version == current {
                    true => reply::write_done(out, write(map, key, op.value.of(buf))),
                    false => reply::write_version_conflict(out, current),
                }
            }
            _ => unreachable!("the message was checked to hold served requests only"),
        }
    }

    /// Stores `value` under `key`; returns its new version.
    fn write(map: &mut HashMap<Vec<u8>, Stored>, key: &[u8], value: &[u8]) -> u64 {
        match map.get_mut(key) {
            Some(stored) => {
                stored.value.clear();
                stored.value.extend_from_slice(value);
                stored.version += 1;
                stored.version
            }
            None => {
                let stored = Stored {
                    value: value.to_vec(),
                    version: 1,
                };
                map.insert(key.to_vec(), stored);
                1
            }
        }
    }

    fn is_served(kind: OpKind) -> bool {
        matches!(kind, OpKind::Get | OpKind::Set | OpKind::Del | OpKind::PutV)
    }

    /// SET and DEL have no result element, GET and PUTV one each.
    fn has_element(kind: OpKind) -> bool {
        matches!(kind, OpKind::Get | OpKind::PutV)
    }

    /// The body of a refused message: `[[-9, CODE, message]]`.
    fn refuse(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
        reply::write_array_len(out, 1);
        reply::write_error(out, code, message);
    }
}

mod task_connection {
    //! One connection served by its own task on a glommio executor, over any
    //! async stream (glommio's `TcpStream` or corekv's `NetStream`): read what
    //! the socket has, serve every complete frame, write all the replies with
    //! one write.

    use super::store::Store;
    use super::READ_CHUNK_BYTES;
    use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use std::cell::RefCell;
    use std::io;
    use std::rc::Rc;

    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        store: Rc<RefCell<Store>>,
    ) {
        if let Err(e) = run(&mut stream, &store).await {
            eprintln!("minimal_server: connection closed: {e}");
        }
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut S,
        store: &RefCell<Store>,
    ) -> io::Result<()> {
        let mut inbuf = vec![0; READ_CHUNK_BYTES];
        let mut filled = 0;
        let mut out = Vec::new();
        loop {
            make_room(&mut inbuf, filled);
            let n = stream.read(&mut inbuf[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
            let consumed = store
                .borrow_mut()
                .serve(&inbuf[..filled], &mut out)
                .map_err(io::Error::other)?;
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            inbuf.copy_within(consumed..filled, 0);
            filled -= consumed;
            // A ready socket is read without suspending, so a client that
            // always has bytes waiting would never let other tasks run.
            glommio::yield_if_needed().await;
        }
    }

    /// Ensures at least half a chunk of free space, doubling as a frame grows.
    pub fn make_room(inbuf: &mut Vec<u8>, filled: usize) {
        if inbuf.len() - filled < READ_CHUNK_BYTES / 2 {
            inbuf.resize(filled + filled.max(READ_CHUNK_BYTES), 0);
        }
    }
}

mod glommio_tcp {
    //! The `glommio` variant: glommio's own listener and `TcpStream`.

    use super::store::Store;
    use super::task_connection;
    use std::cell::RefCell;
    use std::net::TcpListener;
    use std::rc::Rc;
    use std::time::Duration;

    pub fn serve(listener: TcpListener) -> anyhow::Result<()> {
        let executor = super::executor("minimal-glommio")?;
        executor.run(async move {
            let store = Rc::new(RefCell::new(Store::default()));
            let listener = corekv::server::bind::adopt(listener);
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            eprintln!("minimal_server: cannot set TCP_NODELAY: {e}");
                        }
                        let connection = task_connection::serve(stream, store.clone());
                        glommio::spawn_local(connection).detach();
                    }
                    Err(e) => {
                        eprintln!("minimal_server: accept failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    }
}

mod ring {
    //! The `ring` variant: corekv's own network path (`corekv::net`).

    use super::store::Store;
    use super::task_connection;
    use corekv::net::listener::NetListener;
    use corekv::net::ring::NetRing;
    use std::cell::RefCell;
    use std::net::TcpListener;
    use std::rc::Rc;
    use std::time::Duration;

    pub fn serve(listener: TcpListener) -> anyhow::Result<()> {
        let executor = super::executor("minimal-ring")?;
        executor.run(async move {
            let net = NetRing::new()?;
            glommio::spawn_local(net.clone().run()).detach();
            let store = Rc::new(RefCell::new(Store::default()));
            let listener = NetListener::new(listener, net);
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        let connection = task_connection::serve(stream, store.clone());
                        glommio::spawn_local(connection).detach();
                    }
                    Err(e) => {
                        eprintln!("minimal_server: accept failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    }
}

/// A glommio executor on this thread, configured as corekv's shards are
/// (little registered memory, no spinning before sleep), pinned to nothing:
/// the caller pins the process.
fn executor(name: &str) -> anyhow::Result<glommio::LocalExecutor> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name(name)
        .io_memory(64 * 1024)
        .make()
        .map_err(std::io::Error::from)?;
    Ok(executor)
}

mod epoll {
    //! The `epoll` variant: a level-triggered epoll loop in the manner of
    //! Redis's. Each pass reads every ready socket once (what is left is
    //! reported again by the next `epoll_wait`), serves the complete frames,
    //! and only after the pass writes every connection's replies. A reply the
    //! socket cannot take whole waits for `EPOLLOUT`.

    use super::store::Store;
    use super::task_connection::make_room;
    use super::READ_CHUNK_BYTES;
    use std::io;
    use std::net::TcpListener;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// The listener's token; a connection's token is its descriptor.
    const LISTENER: u64 = u64::MAX;
    const MAX_EVENTS: usize = 256;

    struct Connection {
        fd: OwnedFd,
        inbuf: Vec<u8>,
        filled: usize,
        out: Vec<u8>,
        /// Bytes of `out` already sent.
        sent: usize,
        /// Registered for `EPOLLOUT` too (a reply is waiting for room).
        wants_write: bool,
        /// Listed in the pass's writes already.
        pending: bool,
    }

    struct EventLoop {
        epoll: OwnedFd,
        listener: TcpListener,
        /// Indexed by descriptor.
        connections: Vec<Option<Connection>>,
        /// Connections with replies to write at the end of the pass.
        pending: Vec<RawFd>,
        store: Store,
    }

    pub fn serve(listener: TcpListener) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        // SAFETY: epoll_create1 takes no pointers.
        let epoll = match unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } {
            -1 => return Err(io::Error::last_os_error().into()),
            // SAFETY: a new descriptor that nobody else owns.
            fd => unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let mut event_loop = EventLoop {
            epoll,
            listener,
            connections: Vec::new(),
            pending: Vec::new(),
            store: Store::default(),
        };
        let listener_fd = event_loop.listener.as_raw_fd();
        event_loop.control(libc::EPOLL_CTL_ADD, listener_fd, libc::EPOLLIN, LISTENER)?;
        event_loop.run()
    }

    impl EventLoop {
        fn run(&mut self) -> anyhow::Result<()> {
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
            loop {
                // SAFETY: the kernel writes at most MAX_EVENTS events into `events`.
                let n = unsafe {
                    libc::epoll_wait(
                        self.epoll.as_raw_fd(),
                        events.as_mut_ptr(),
                        MAX_EVENTS as i32,
                        -1,
                    )
                };
                if n < 0 {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(error.into());
                }
                for event in &events[..n as usize] {
                    let (token, flags) = (event.u64, event.events);
                    if token == LISTENER {
                        self.accept_all()?;
                    } else {
                        self.on_ready(token as RawFd, flags);
                    }
                }
                self.write_pending();
            }
        }

        fn accept_all(&mut self) -> io::Result<()> {
            loop {
                // SAFETY: null address pointers: the peer's address is not wanted.
                let fd = unsafe {
                    libc::accept4(
                        self.listener.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                };
                if fd < 0 {
                    let error = io::Error::last_os_error();
                    return match error.raw_os_error() {
                        Some(libc::EAGAIN) => Ok(()),
                        Some(libc::EINTR | libc::ECONNABORTED) => continue,
                        _ => {
                            eprintln!("minimal_server: accept failed: {error}");
                            Ok(())
                        }
                    };
                }
                // SAFETY: a successful accept returns a new descriptor nobody else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                if let Err(e) = socket2::SockRef::from(&fd).set_nodelay(true) {
                    eprintln!("minimal_server: cannot set TCP_NODELAY: {e}");
                }
                let raw = fd.as_raw_fd();
                self.control(libc::EPOLL_CTL_ADD, raw, libc::EPOLLIN, raw as u64)?;
                let slot = raw as usize;
                if self.connections.len() <= slot {
                    self.connections.resize_with(slot + 1, || None);
                }
                self.connections[slot] = Some(Connection {
                    fd,
                    inbuf: vec![0; READ_CHUNK_BYTES],
                    filled: 0,
                    out: Vec::new(),
                    sent: 0,
                    wants_write: false,
                    pending: false,
                });
            }
        }

        fn on_ready(&mut self, fd: RawFd, flags: u32) {
            let Some(Some(conn)) = self.connections.get_mut(fd as usize) else {
                return; // closed earlier in this pass
            };
            let readable = libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR;
            if flags & readable as u32 != 0 {
                match read_and_serve(conn, &mut self.store) {
                    Ok(true) => {}
                    Ok(false) => return self.close(fd),
                    Err(e) => {
                        eprintln!("minimal_server: connection closed: {e}");
                        return self.close(fd);
                    }
                }
            }
            let wants_writing = conn.sent < conn.out.len();
            if wants_writing && !conn.pending {
                conn.pending = true;
                self.pending.push(fd);
            }
        }

        /// Writes every reply of the pass (Redis's "before sleep" step).
        fn write_pending(&mut self) {
            let mut pending = std::mem::take(&mut self.pending);
            for &fd in &pending {
                if let Err(e) = self.write_replies(fd) {
                    eprintln!("minimal_server: connection closed: {e}");
                    self.close(fd);
                }
            }
            pending.clear();
            self.pending = pending;
        }

        /// Sends what the socket takes of `fd`'s replies, and asks for
        /// `EPOLLOUT` only while some wait for room.
        fn write_replies(&mut self, fd: RawFd) -> io::Result<()> {
            let Some(Some(conn)) = self.connections.get_mut(fd as usize) else {
                return Ok(()); // closed earlier in this pass
            };
            conn.pending = false;
            let wants_write = !flush(conn)?;
            if wants_write == conn.wants_write {
                return Ok(());
            }
            conn.wants_write = wants_write;
            let interest = match wants_write {
                true => libc::EPOLLIN | libc::EPOLLOUT,
                false => libc::EPOLLIN,
            };
            self.control(libc::EPOLL_CTL_MOD, fd, interest, fd as u64)
        }

        fn close(&mut self, fd: RawFd) {
            // Closing the descriptor removes it from the epoll set.
            self.connections[fd as usize] = None;
        }

        fn control(&self, op: i32, fd: RawFd, interest: i32, token: u64) -> io::Result<()> {
            let mut event = libc::epoll_event {
                events: interest as u32,
                u64: token,
            };
            // SAFETY: `event` is a valid epoll_event for the duration of the call.
            match unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        }
    }

    /// Reads once and serves the complete frames; false when the peer closed.
    fn read_and_serve(conn: &mut Connection, store: &mut Store) -> io::Result<bool> {
        make_room(&mut conn.inbuf, conn.filled);
        let free = &mut conn.inbuf[conn.filled..];
        // SAFETY: recv writes at most `free.len()` bytes into the slice we hold.
        let n = unsafe { libc::recv(conn.fd.as_raw_fd(), free.as_mut_ptr().cast(), free.len(), 0) };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(true),
                _ => Err(error),
            };
        }
        if n == 0 {
            return Ok(false);
        }
        conn.filled += n as usize;
        let consumed = store
            .serve(&conn.inbuf[..conn.filled], &mut conn.out)
            .map_err(io::Error::other)?;
        conn.inbuf.copy_within(consumed..conn.filled, 0);
        conn.filled -= consumed;
        Ok(true)
    }

    /// Sends what the socket takes of the replies; true when all are sent.
    fn flush(conn: &mut Connection) -> io::Result<bool> {
        while conn.sent < conn.out.len() {
            let rest = &conn.out[conn.sent..];
            // SAFETY: send reads at most `rest.len()` bytes from the slice we hold.
            let n = unsafe {
                libc::send(
                    conn.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Ok(false),
                    _ => return Err(error),
                }
            }
            conn.sent += n as usize;
        }
        conn.out.clear();
        conn.sent = 0;
        Ok(true)
    }
}
