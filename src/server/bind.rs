//! Listening sockets: every listener of the server (each shard's msgpack and
//! HTTP listener, and the HTTP 503 server of recovery) is made here, one way.
//!
//! Two socket options, for two reasons:
//! - **SO_REUSEPORT**, so every shard binds the same address and the kernel
//!   spreads incoming connections over them.
//! - **SO_REUSEADDR**, so a server restarted on the same port starts at once.
//!   A server that dies (kill -9, the OOM killer) or shuts down with clients
//!   connected leaves its side of those connections in the kernel, in
//!   FIN_WAIT or TIME_WAIT, for up to a minute; without SO_REUSEADDR they
//!   keep the port "in use" for every bind until they expire. Accepted
//!   connections inherit the option from their listener, which is what lets
//!   the next server's bind pass them by.
//!
//! Neither option lets a second *live* server in: Linux refuses any bind on a
//! port where a socket listens, unless both sockets set SO_REUSEPORT.
//! [`probe`] binds without SO_REUSEPORT, so it fails whenever anything listens
//! on the address — another corekv-server included — and start-up runs it
//! before any shard binds (see [`crate::server`]).

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// The listen backlog (glommio's own `TcpListener::bind` uses the same).
const BACKLOG: i32 = 1024;

/// The port a starting server has probed, held until its shards listen on
/// it: a socket bound with SO_REUSEPORT (and not SO_REUSEADDR), not
/// listening. The shards' SO_REUSEPORT sockets may bind beside it; any other
/// server's [`probe`] fails against it. Without it, two servers starting at
/// once (or two on port 0 that the kernel gave the same free port between
/// one's probe and its shards' binds) could both pass their probes and then
/// share the port, each getting part of the other's clients. Not listening,
/// it takes no connection: until the shards listen, connecting is refused,
/// as it was before the claim.
pub struct PortClaim {
    pub addr: SocketAddr,
    _socket: Socket,
}

/// [`probe`]s `addr`, then claims the port bound until the claim is dropped.
pub fn claim(addr: SocketAddr) -> io::Result<PortClaim> {
    let addr = probe(addr)?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(PortClaim {
        addr,
        _socket: socket,
    })
}

/// Binds `addr` once without SO_REUSEPORT, to check that nothing listens
/// there, and returns the address bound (port 0 resolved). The socket is
/// closed at once; it never accepted, so it leaves nothing behind.
pub fn probe(addr: SocketAddr) -> io::Result<SocketAddr> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let bound = socket.local_addr()?;
    bound
        .as_socket()
        .ok_or_else(|| io::Error::other(format!("{addr} bound to a non-IP address")))
}

/// A blocking listener on `addr` that shares the port with the other shards'
/// (SO_REUSEPORT) and with the remains of a previous server (SO_REUSEADDR).
pub fn shared_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// [`shared_listener`], served by this thread's glommio executor.
pub fn shard_listener(addr: SocketAddr) -> io::Result<glommio::net::TcpListener> {
    shared_listener(addr).map(adopt)
}

/// Adopts a listening socket on this thread's glommio executor. The socket
/// must be blocking: glommio accepts through io_uring.
pub fn adopt(listener: TcpListener) -> glommio::net::TcpListener {
    crate::sys::adopt_listener(listener)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_fails_while_shared_listeners_listen_and_passes_after() {
        let first = shared_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("addr");
        let second = shared_listener(addr).expect("a second shared listener shares the port");
        let err = probe(addr).expect_err("a probe must not share a live port");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop((first, second));
        assert_eq!(probe(addr).expect("free again"), addr);
    }

    #[test]
    fn a_claimed_port_refuses_other_probes_and_takes_shard_listeners() {
        let claim = claim("127.0.0.1:0".parse().expect("addr")).expect("claim");
        let err = probe(claim.addr).expect_err("a claimed port is not free");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let shard = shared_listener(claim.addr).expect("the claimant's shards bind it");
        drop(claim);
        let err = probe(shard.local_addr().expect("addr")).expect_err("the shard listens");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }
}
