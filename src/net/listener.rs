//! [`NetListener`]: a shard's listening socket, accepting through its
//! [`NetRing`].

use super::ring::NetRing;
use super::stream::NetStream;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::rc::Rc;

pub struct NetListener {
    listener: TcpListener,
    ring: Rc<NetRing>,
}

impl NetListener {
    /// Serves `listener` (blocking mode: the ring waits for connections).
    pub fn new(listener: TcpListener, ring: Rc<NetRing>) -> NetListener {
        NetListener { listener, ring }
    }

    /// The next connection, with Nagle's algorithm off (replies are written
    /// whole; a small one must leave at once).
    pub async fn accept(&self) -> io::Result<NetStream> {
        let result = self.ring.accept(self.listener.as_raw_fd()).await;
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        let fd = crate::sys::accepted(result);
        if let Err(e) = socket2::SockRef::from(&fd).set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        Ok(NetStream::new(fd, self.ring.clone()))
    }
}
