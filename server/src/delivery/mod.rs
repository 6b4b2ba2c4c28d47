//! Bytes out, the bottom layer: a message encoded once as a complete WebSocket [`Frame`], the
//! reasons a socket is closed ([`CloseReason`]), each socket's [`Outlet`] (direct writes, and a
//! bounded backlog when the socket pushes back) and the [`Owner`] it calls when it needs the
//! loop or task that serves it, the fan-out's [`Writer`], and the keep-alive sweep that pings
//! every socket. Nothing here knows clients, topics or nodes.

mod close;
mod frame;
mod keepalive;
mod outlet;
mod owner;
mod writer;

pub use close::{CloseReason, echo as close_echo};
pub use frame::Frame;
pub use keepalive::{closed_if_shutting_down, keep_alive, outlets_in_slice};
pub use outlet::{Flush, Outlet, Wanted};
pub use owner::Owner;
#[cfg(test)]
pub(crate) use writer::WRITER_QUEUE;
pub use writer::{PendingWrites, Writer};
