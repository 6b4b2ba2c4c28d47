//! Why the server closes a socket: every close code it sends, with its reason, lives here.

use switchboard_protocol::{CLOSE_PING_TIMEOUT, CLOSE_SLOW_CONSUMER, CLOSE_UNREGISTERED};

use super::Frame;

/// A close the server starts (RFC 6455 7.4): each has one code and one short reason. Small
/// (one byte), so a socket can hold the reason it is closing for in an atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// 1001: the server shuts down.
    GoingAway = 1,
    /// 1002: the peer broke the WebSocket protocol.
    ProtocolError,
    /// 1007: a text message that is not UTF-8.
    InvalidUtf8,
    /// 1009: a message over `--max-message-bytes`.
    TooBig,
    /// 1013: the store cannot be read to connect the client.
    StoreUnavailable,
    /// 1013: the cluster bus cannot carry the client's topics.
    BusUnavailable,
    /// 1013: subscription changes kept racing the connect.
    SubscriptionsChanging,
    /// 1013: relay peers cannot meet now.
    RelayUnavailable,
    /// 4001: the client was unregistered.
    Unregistered,
    /// 4002: no answer to a ping within an interval.
    PingTimeout,
    /// 4008: the socket does not keep up with what it is sent.
    SlowConsumer,
    /// 1006: a write failed, the peer is gone. Never sent.
    Lost,
}

impl CloseReason {
    /// Every reason, in the order of their numbers (see [`CloseReason::from_number`]).
    const ALL: [CloseReason; 12] = [
        CloseReason::GoingAway,
        CloseReason::ProtocolError,
        CloseReason::InvalidUtf8,
        CloseReason::TooBig,
        CloseReason::StoreUnavailable,
        CloseReason::BusUnavailable,
        CloseReason::SubscriptionsChanging,
        CloseReason::RelayUnavailable,
        CloseReason::Unregistered,
        CloseReason::PingTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Lost,
    ];

    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::GoingAway => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::TooBig => 1009,
            CloseReason::StoreUnavailable
            | CloseReason::BusUnavailable
            | CloseReason::SubscriptionsChanging
            | CloseReason::RelayUnavailable => 1013,
            CloseReason::Unregistered => CLOSE_UNREGISTERED,
            CloseReason::PingTimeout => CLOSE_PING_TIMEOUT,
            CloseReason::SlowConsumer => CLOSE_SLOW_CONSUMER,
            CloseReason::Lost => 1006,
        }
    }

    /// The reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::GoingAway => "server shutting down",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::InvalidUtf8 => "invalid UTF-8",
            CloseReason::TooBig => "message too big",
            CloseReason::StoreUnavailable => "store unavailable",
            CloseReason::BusUnavailable => "cluster bus unavailable",
            CloseReason::SubscriptionsChanging => "subscriptions kept changing; reconnect",
            CloseReason::RelayUnavailable => "relay unavailable",
            CloseReason::Unregistered => "unregistered",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::Lost => "connection lost",
        }
    }

    /// Whether the peer still reads: then what waits is written before the close frame, and
    /// the peer's answer is awaited. A peer that stopped answering or reading gets neither.
    pub fn peer_is_responsive(self) -> bool {
        !matches!(self, CloseReason::PingTimeout | CloseReason::SlowConsumer | CloseReason::Lost)
    }

    /// The close frame that says it.
    pub fn frame(self) -> Frame {
        Frame::close(self.code(), self.reason())
    }

    /// The reason's number (never 0, so 0 can mean "none" where one is stored in an atomic).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The reason with this [`number`](Self::number); none for 0 or a number no reason has.
    pub fn from_number(number: u8) -> Option<CloseReason> {
        let index = usize::from(number).checked_sub(1)?;
        CloseReason::ALL.get(index).copied()
    }
}

/// The answer to the peer's close frame: its own code echoed (RFC 6455 5.5.1), or a close
/// without a code when it gave none.
pub fn echo(peer_code: Option<u16>) -> Frame {
    match peer_code {
        Some(code) => Frame::close(code, ""),
        None => Frame::close_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_number() {
        for (index, reason) in CloseReason::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(reason.number()), index + 1, "{reason:?} is in ALL's order");
            assert_eq!(CloseReason::from_number(reason.number()), Some(reason));
            assert!(reason.reason().len() <= 123, "a close reason fits a control frame");
        }
        assert_eq!(CloseReason::from_number(0), None);
        assert_eq!(CloseReason::from_number(CloseReason::ALL.len() as u8 + 1), None);
    }

    #[test]
    fn the_protocol_lists_exactly_the_codes_the_server_sends() {
        let mut sent: Vec<u16> = CloseReason::ALL
            .into_iter()
            .filter(|reason| *reason != CloseReason::Lost)
            .map(CloseReason::code)
            .collect();
        sent.sort_unstable();
        sent.dedup();
        assert_eq!(sent, switchboard_protocol::SERVER_CLOSE_CODES);
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let frame = CloseReason::SlowConsumer.frame();
        assert_eq!(frame.payload(), b"\x0f\xa8slow consumer");
        assert_eq!(echo(Some(4321)).payload(), 4321u16.to_be_bytes());
        assert!(echo(None).payload().is_empty());
        assert!(!CloseReason::PingTimeout.peer_is_responsive());
        assert!(CloseReason::Unregistered.peer_is_responsive());
    }
}
