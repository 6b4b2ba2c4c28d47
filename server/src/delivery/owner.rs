//! Who serves a socket: a readiness loop serving many, or the task of one TLS socket. Anyone may
//! ask for the owner's attention for a socket (it has frames to write, is to close, or has work
//! for its session); the owner takes the list of sockets that asked, each listed once however
//! often it asked, so the list never holds more entries than the owner has sockets.

use std::{
    mem,
    task::{Context, Poll},
};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

/// The sockets of one owner that want its attention, by their number there, and the owner's
/// waker.
#[derive(Default)]
pub struct Owner {
    called: Mutex<Vec<u32>>,
    waker: AtomicWaker,
}

impl Owner {
    /// Lists socket `token` and wakes the owner. Each [`Outlet`](super::Outlet) calls once until
    /// the owner has taken its call.
    pub(super) fn call(&self, token: u32) {
        self.called.lock().push(token);
        self.waker.wake();
    }

    /// Moves the sockets that called into `into` (empty); pending, with the task's waker kept,
    /// while none did.
    pub fn poll_calls(&self, cx: &mut Context<'_>, into: &mut Vec<u32>) -> Poll<()> {
        // Registered first: a call after the check still wakes this task.
        self.waker.register(cx.waker());
        let mut called = self.called.lock();
        if called.is_empty() {
            return Poll::Pending;
        }
        mem::swap(&mut *called, into);
        Poll::Ready(())
    }
}
