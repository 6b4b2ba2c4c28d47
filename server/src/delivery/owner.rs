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
    calls: Mutex<Calls>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct Calls {
    tokens: Vec<u32>,
    /// The owner is serving its sockets and takes every call before it waits again: a call
    /// needs no wake-up then (most calls come from the owner's own work).
    serving: bool,
}

impl Owner {
    /// Lists socket `token` and wakes the owner unless it is serving. Each
    /// [`Outlet`](super::Outlet) calls once until the owner has taken its call.
    pub(super) fn call(&self, token: u32) {
        let mut calls = self.calls.lock();
        calls.tokens.push(token);
        let serving = calls.serving;
        drop(calls);
        if !serving {
            self.waker.wake();
        }
    }

    /// Ready once a socket called (the calls stay for [`take_calls`](Self::take_calls));
    /// pending, with the task's waker kept, while none did. Polling it ends serving.
    pub fn poll_called(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered first: a call after the check wakes this task.
        self.waker.register(cx.waker());
        let mut calls = self.calls.lock();
        calls.serving = false;
        if calls.tokens.is_empty() { Poll::Pending } else { Poll::Ready(()) }
    }

    /// The owner serves its sockets until it next polls [`poll_called`](Self::poll_called),
    /// taking every call made meanwhile with [`take_calls`](Self::take_calls).
    pub fn serving(&self) {
        self.calls.lock().serving = true;
    }

    /// Moves the sockets that called into `into` (empty); false when none did.
    pub fn take_calls(&self, into: &mut Vec<u32>) -> bool {
        let mut calls = self.calls.lock();
        mem::swap(&mut calls.tokens, into);
        !into.is_empty()
    }
}
