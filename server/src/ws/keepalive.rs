//! One task per node keeps every socket alive: it pings each socket once per interval, closes
//! the ones that sent nothing since their last ping, and closes them all at shutdown. A timer and
//! a shutdown wait in every socket's task would cost each idle connection their room.

use std::{sync::Arc, time::Duration};

use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use super::Outlet;
use crate::{hub::CloseReason, node::Node};

const GOING_AWAY: CloseReason = CloseReason { code: 1001, reason: "server shutting down" };

/// A round is spread over this many ticks, each pinging the sockets numbered alike modulo it,
/// so the pings (and the pongs they bring back) do not all come at once.
const SLICES: u64 = 8;
/// Sockets pinged between two yields: a tick never holds a worker thread for long.
const CHUNK: usize = 256;

/// Pings the node's client and relay sockets every `period` until `shutdown`, then closes every
/// socket with 1001. A socket attached after that closes itself (see [`closed_if_shutting_down`]).
pub async fn keep_alive(node: Arc<Node>, period: Duration, shutdown: CancellationToken) {
    let mut ticks = interval((period / SLICES as u32).max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is now: pings start one tick after the node does.
    ticks.tick().await;
    for round in 0u64.. {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        for chunk in outlets(&node, round % SLICES, SLICES).chunks(CHUNK) {
            chunk.iter().for_each(|outlet| outlet.ping());
            tokio::task::yield_now().await;
        }
    }
    for outlet in outlets(&node, 0, 1) {
        outlet.close(GOING_AWAY);
    }
}

/// Closes a socket attached once shutdown began, which the final sweep may have missed.
pub(super) fn closed_if_shutting_down(outlet: &Outlet, shutdown: &CancellationToken) {
    if shutdown.is_cancelled() {
        outlet.close(GOING_AWAY);
    }
}

fn outlets(node: &Node, slice: u64, slices: u64) -> Vec<Arc<Outlet>> {
    let mut outlets = node.hub.outlets(slice, slices);
    outlets.extend(node.relay.outlets(slice, slices));
    outlets
}
