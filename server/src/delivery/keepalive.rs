//! One task per node keeps every socket alive: it pings each socket once per interval, closes
//! the ones that sent nothing since their last ping, and closes them all at shutdown. A timer and
//! a shutdown wait per socket would cost each idle connection their room.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use super::{CloseReason, Outlet};

/// A round is spread over this many ticks, each pinging the sockets numbered alike modulo it,
/// so the pings (and the pongs they bring back) do not all come at once.
const SLICES: u64 = 8;
/// Sockets pinged between two yields: a tick never holds a worker thread for long.
const CHUNK: usize = 256;

/// Pings every socket `outlets` lists, once every `period`, until `shutdown`; then closes every
/// socket with 1001. `outlets(slice, slices)` gives the outlets of the sockets whose number is
/// `slice` modulo `slices` (`0, 1`: all). A socket attached after the final sweep closes itself
/// (see [`closed_if_shutting_down`]).
pub async fn keep_alive<F>(period: Duration, shutdown: CancellationToken, outlets: F)
where
    F: Fn(u64, u64) -> Vec<Arc<Outlet>>,
{
    let mut ticks = interval((period / SLICES as u32).max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is now: pings start one tick after the node does.
    ticks.tick().await;
    for round in 0u64.. {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        for chunk in outlets(round % SLICES, SLICES).chunks(CHUNK) {
            chunk.iter().for_each(|outlet| outlet.ping());
            tokio::task::yield_now().await;
        }
    }
    for outlet in outlets(0, 1) {
        outlet.close(CloseReason::GoingAway);
    }
}

/// Closes a socket attached once shutdown began, which the final sweep may have missed.
pub fn closed_if_shutting_down(outlet: &Outlet, shutdown: &CancellationToken) {
    if shutdown.is_cancelled() {
        outlet.close(CloseReason::GoingAway);
    }
}

/// The outlets of the sockets in `sockets` whose number is `slice` modulo `slices` (a share of
/// a keep-alive round; `0, 1` for all).
pub fn outlets_in_slice<S>(
    sockets: &DashMap<u64, Arc<S>>,
    slice: u64,
    slices: u64,
    outlet: impl Fn(&Arc<S>) -> &Arc<Outlet>,
) -> Vec<Arc<Outlet>> {
    let mine = sockets.iter().filter(|entry| entry.key() % slices == slice);
    mine.map(|entry| outlet(entry.value()).clone()).collect()
}
