//! The disk engine's value reads through the shard's own network ring: the
//! log's [`BlockReader`] implemented by [`NetRing::read_at`]
//! (`log::values::BlockReader` says why they do not go through glommio).

use crate::log::values::{BlockBuffer, BlockReader};
use crate::net::ring::NetRing;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;

/// Reads blocks of log files on the ring the shard polls its sockets with.
pub struct RingReads(pub Rc<NetRing>);

impl BlockReader for RingReads {
    fn read_blocks(
        &self,
        fd: RawFd,
        offset: u64,
        size: usize,
        align: usize,
    ) -> Pin<Box<dyn Future<Output = io::Result<BlockBuffer>>>> {
        let read = self.0.read_at(fd, offset, size, align);
        Box::pin(async move {
            let (buffer, range) = read.await?.into_parts();
            Ok(BlockBuffer { buffer, range })
        })
    }
}
