//! The fan-out's write side: a delivery hands its frame to every recipient's outlet first and
//! writes the sockets afterwards, from one writer task, so the frames a socket received
//! meanwhile leave in one write.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::Outlet;

/// Outlets that took a delivery and are written once every recipient has it: the frames a
/// socket received meanwhile leave in one write. Dropping it writes them here and now; handing
/// it to a [`Writer`] writes them there.
#[derive(Default)]
pub struct PendingWrites(Vec<Arc<Outlet>>);

impl PendingWrites {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds an outlet that took a frame and is to be written (by [`Outlet::offer`], once).
    pub(super) fn push(&mut self, outlet: Arc<Outlet>) {
        self.0.push(outlet);
    }
}

impl Drop for PendingWrites {
    fn drop(&mut self) {
        // Last offered, first written: the next delivery offers in the same order as this one,
        // so walking the other way it meets this write on one socket's lock instead of
        // trailing it from lock to lock (the spinning on those locks cost 7% of the server's
        // CPU at saturation; docs/performance.md).
        for outlet in self.0.drain(..).rev() {
            outlet.write_pending();
        }
    }
}

/// Most deliveries waiting for the [`Writer`]: past that a publisher waits, and a delivery from
/// another node is written where it was made. So a socket's backlog holds at most about this
/// many frames more than the publishes in progress; it also bounds how many frames a socket
/// gathers while the writer pauses ([`GATHER`]). 12 is the most throughput whose p99 stays
/// level with uWebSockets.js' (the queue lengths measured: docs/performance.md, "The writer's
/// queue").
pub(crate) const WRITER_QUEUE: usize = 12;

/// How long the writer lets deliveries gather once it is behind (its last round took more than
/// one): each socket's frames then leave in fewer, fuller writes, as uWebSockets writes once per
/// event-loop turn (without it the writer chased every publish and wrote ~6 frames per system
/// call at saturation; docs/performance.md). A delivery that finds the writer idle is written at
/// once, so at a low rate nothing waits.
const GATHER: Duration = Duration::from_millis(1);

/// The task that writes delivered frames out. While it writes one delivery's sockets (or
/// pauses, once behind), the deliveries made meanwhile add their frames to the sockets it has
/// not reached yet, so under load each socket gets several frames per write (as uWebSockets
/// drains its sockets once per event-loop turn), and at a low rate each frame still leaves at
/// once.
pub struct Writer {
    jobs: mpsc::Sender<PendingWrites>,
}

impl Writer {
    /// Starts the writing task; it ends once the writer is dropped.
    pub fn start() -> Writer {
        let (jobs, mut queue) = mpsc::channel::<PendingWrites>(WRITER_QUEUE);
        tokio::spawn(async move {
            let mut taken = Vec::new();
            while queue.recv_many(&mut taken, WRITER_QUEUE).await > 0 {
                let behind = taken.len() > 1;
                // Dropping a job writes it.
                taken.clear();
                if behind {
                    tokio::time::sleep(GATHER).await;
                }
            }
        });
        Writer { jobs }
    }

    /// Has `pending` written; waits while the writer is [`WRITER_QUEUE`] deliveries behind (a
    /// publisher cannot outrun the sockets).
    pub async fn write(&self, pending: PendingWrites) {
        // Sent even when empty (every recipient already waits for the writer): it still takes
        // a place in the queue, so a publisher cannot pile frames up faster than it writes.
        // Refused only once the writing task is gone: dropping the job writes it here.
        let _ = self.jobs.send(pending).await;
    }

    /// Has `pending` written without waiting for it.
    pub fn write_later(&self, pending: PendingWrites) {
        if !pending.is_empty() {
            let _ = self.jobs.try_send(pending);
        }
    }
}
