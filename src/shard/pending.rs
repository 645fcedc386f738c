//! Forwarded batches waiting for their owner's response, on the shard that sent
//! them. Executor-local (`RefCell`, never shared across threads): the response
//! receiver task files each [`ShardResponse`] under its ticket, and the
//! connection that sent the batch awaits it.
//!
//! Tickets are never reused (a u64 counter), so a response for a waiter that has
//! gone away cannot be handed to a newer one; it is simply dropped.

use super::mesh::{Reply, ShardResponse, Ticket};
use hashbrown::HashMap;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Slot {
    reply: Option<Reply>,
    waker: Option<Waker>,
}

/// The table of outstanding tickets of one shard.
#[derive(Default)]
pub struct Pending {
    next_ticket: Cell<u64>,
    slots: RefCell<HashMap<Ticket, Slot>>,
}

impl Pending {
    /// Opens a slot for a batch about to be sent.
    pub fn open(&self) -> Ticket {
        let ticket = Ticket(self.next_ticket.get());
        self.next_ticket.set(ticket.0 + 1);
        self.slots.borrow_mut().insert(ticket, Slot::default());
        ticket
    }

    /// Files a response and wakes its waiter. A response whose waiter is gone is dropped.
    pub fn complete(&self, response: ShardResponse) {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(&response.ticket) else {
            return;
        };
        slot.reply = Some(response.reply);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }

    /// Gives up on a ticket whose batch could not be sent.
    pub fn cancel(&self, ticket: Ticket) {
        self.slots.borrow_mut().remove(&ticket);
    }

    /// Resolves when the response for `ticket` has arrived.
    pub fn wait(&self, ticket: Ticket) -> Wait<'_> {
        Wait {
            pending: self,
            ticket,
        }
    }
}

/// Future returned by [`Pending::wait`]; dropping it abandons the ticket.
pub struct Wait<'a> {
    pending: &'a Pending,
    ticket: Ticket,
}

impl Future for Wait<'_> {
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut slots = self.pending.slots.borrow_mut();
        let slot = slots
            .get_mut(&self.ticket)
            .expect("a ticket is waited on only while its slot is open");
        if let Some(reply) = slot.reply.take() {
            slots.remove(&self.ticket);
            return Poll::Ready(reply);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.pending.slots.borrow_mut().remove(&self.ticket);
    }
}
