//! When to reconnect: exponential backoff with jitter, and which closes end the retrying.
//! Shared by the Wasm and the native client, so both reconnect alike.

use crate::{CLOSE_PING_TIMEOUT, CLOSE_SLOW_CONSUMER, CLOSE_UNREGISTERED};

/// A reconnect schedule: attempt `n` waits about `initial_ms * 2^(n-1)`, capped at `max_ms`,
/// drawn from the upper half of that delay so many clients dropped at once (a node restarting)
/// do not all come back in the same instant. After `max_attempts` failures in a row it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial_ms: u32,
    pub max_ms: u32,
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial_ms: 500, max_ms: 15_000, max_attempts: 12 }
    }
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (1 for the first), given `jitter` in
    /// [0, 1); `None` once the attempts are used up.
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> Option<u32> {
        if attempt == 0 || attempt > self.max_attempts {
            return None;
        }
        let doublings = (attempt - 1).min(31);
        let full =
            u64::from(self.initial_ms).saturating_mul(1 << doublings).min(u64::from(self.max_ms));
        let half = full / 2;
        let jitter = jitter.clamp(0.0, 1.0);
        Some((half + ((full - half) as f64 * jitter) as u64) as u32)
    }
}

/// Whether reconnecting after this close code can help: not after an unregister (the id is
/// gone) or a close the client asked for.
pub fn reconnect_helps(code: u16) -> bool {
    !matches!(code, 1000 | CLOSE_UNREGISTERED)
}

/// What a close code means, for people.
pub fn describe_close(code: u16) -> &'static str {
    match code {
        1000 => "closed",
        1001 => "the server is shutting down",
        1002 => "protocol error",
        1006 => "connection lost or refused",
        1007 => "invalid UTF-8 in a frame",
        1009 => "message too large",
        1013 => "the server is temporarily unavailable",
        CLOSE_UNREGISTERED => "unregistered",
        CLOSE_PING_TIMEOUT => "did not answer the server's ping",
        CLOSE_SLOW_CONSUMER => "read too slowly (slow consumer)",
        _ => "closed by the server",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_their_upper_half() {
        let backoff = Backoff { initial_ms: 500, max_ms: 8_000, max_attempts: 10 };
        let lowest: Vec<u32> = (1..=7).filter_map(|n| backoff.delay_ms(n, 0.0)).collect();
        let highest: Vec<u32> = (1..=7).filter_map(|n| backoff.delay_ms(n, 0.999_999)).collect();
        assert_eq!(lowest, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(highest, [499, 999, 1999, 3999, 7999, 7999, 7999]);
        assert_eq!(backoff.delay_ms(3, 0.5), Some(1500));
    }

    #[test]
    fn it_gives_up_after_the_last_attempt() {
        let backoff = Backoff::default();
        assert!(backoff.delay_ms(backoff.max_attempts, 0.5).is_some());
        assert_eq!(backoff.delay_ms(backoff.max_attempts + 1, 0.5), None);
        assert_eq!(backoff.delay_ms(0, 0.5), None);
        // Huge attempt numbers neither overflow nor exceed the cap.
        let patient = Backoff { max_attempts: u32::MAX, ..Backoff::default() };
        assert_eq!(patient.delay_ms(u32::MAX, 1.0), Some(patient.max_ms));
    }

    #[test]
    fn unregistered_and_client_closes_end_the_retrying() {
        assert!(!reconnect_helps(CLOSE_UNREGISTERED));
        assert!(!reconnect_helps(1000));
        for code in [1001, 1006, 1013, CLOSE_PING_TIMEOUT, CLOSE_SLOW_CONSUMER] {
            assert!(reconnect_helps(code), "{code}");
        }
        assert_eq!(describe_close(CLOSE_UNREGISTERED), "unregistered");
    }
}
