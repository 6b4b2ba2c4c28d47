//! The marker every benchmark payload carries (sequence number and send time), found again in
//! whatever envelope a server wraps the payload in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Starts the marker; chosen to occur in no server's envelope.
const PREFIX: &[u8] = b"sbm:";

/// Microseconds since the Unix epoch: every process of a run shares this clock.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A payload of `size` bytes (more if the marker alone is longer): `sbm:<seq>:<sent_us>;`
/// padded with `x`. Plain ASCII, so it is the same bytes as a JSON string and as a raw body.
pub fn payload(seq: u64, sent_us: u64, size: usize) -> String {
    let mut text = format!("sbm:{seq}:{sent_us};");
    let padding = size.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', padding));
    text
}

/// The (sequence, sent µs) of the first marker in `frame`, if it has one.
pub fn parse(frame: &[u8]) -> Option<(u64, u64)> {
    let start = frame.windows(PREFIX.len()).position(|w| w == PREFIX)? + PREFIX.len();
    let rest = &frame[start..];
    let (seq, rest) = number_until(rest, b':')?;
    let (sent, _) = number_until(rest, b';')?;
    Some((seq, sent))
}

/// A decimal number followed by `end`, and what follows `end`.
fn number_until(bytes: &[u8], end: u8) -> Option<(u64, &[u8])> {
    let stop = bytes.iter().position(|&b| b == end)?;
    if stop == 0 || stop > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in &bytes[..stop] {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    Some((value, &bytes[stop + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_parses_back() {
        let text = payload(42, 1_700_000_000_123_456, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(parse(text.as_bytes()), Some((42, 1_700_000_000_123_456)));
        // A marker longer than the asked size is kept whole.
        let short = payload(7, 99, 4);
        assert_eq!(short, "sbm:7:99;");
        assert_eq!(parse(short.as_bytes()), Some((7, 99)));
    }

    #[test]
    fn found_inside_any_envelope() {
        let text = payload(3, 1234, 40);
        let switchboard =
            format!(r#"{{"type":"message","topic":"bench","from":null,"data":"{text}"}}"#);
        assert_eq!(parse(switchboard.as_bytes()), Some((3, 1234)));
        assert_eq!(parse(text.as_bytes()), Some((3, 1234)));
    }

    #[test]
    fn rejects_what_is_not_a_marker() {
        for bad in [
            "",
            "no marker here",
            "sbm:",
            "sbm:1:2",
            "sbm::2;",
            "sbm:1:;",
            "sbm:x:2;",
            "sbm:1:2x;",
            "sbm:99999999999999999999:1;",
            "sbm:123456789012345678901:1;",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
