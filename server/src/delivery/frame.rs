//! Server-to-client frames encoded once. A server frame is unmasked (RFC 6455 5.1), so header and
//! payload are the same bytes for every recipient: a delivery hands each socket a clone of one
//! [`Frame`] (a reference-count bump) and the connection writes those bytes as they are.

use bytes::Bytes;
use serde::Serialize;

/// FIN bit and the text opcode: one complete text frame.
const FIN_TEXT: u8 = 0x80 | 0x1;
/// FIN bit and the binary opcode (relay peers may send binary frames).
const FIN_BINARY: u8 = 0x80 | 0x2;
/// FIN bit and the control opcodes.
const FIN_CLOSE: u8 = 0x80 | 0x8;
const FIN_PING: u8 = 0x80 | 0x9;
const FIN_PONG: u8 = 0x80 | 0xA;
/// The longest header of an unmasked frame: opcode byte, length marker, 64-bit length.
const MAX_HEADER: usize = 10;

/// One complete WebSocket data frame (FIN, opcode, length, payload), shared by every recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Encodes `payload` as a single final text frame (tests build frames from text).
    #[cfg(test)]
    pub fn text(payload: &str) -> Frame {
        Frame::from_payload(payload.as_bytes())
    }

    /// Frames a payload that is already text (a delivery from another node, a relayed text).
    pub fn from_payload(payload: &[u8]) -> Frame {
        Frame::copied(payload, FIN_TEXT)
    }

    /// Frames a binary payload (a relayed binary frame).
    pub fn binary(payload: &[u8]) -> Frame {
        Frame::copied(payload, FIN_BINARY)
    }

    /// A ping with no payload (static bytes: every socket is pinged with them).
    pub fn ping() -> Frame {
        Frame(Bytes::from_static(&[FIN_PING, 0]))
    }

    /// The pong answering a ping with `payload` (at most 125 bytes, as the ping's).
    pub fn pong(payload: &[u8]) -> Frame {
        Frame::copied(payload, FIN_PONG)
    }

    /// A close frame with a status code and a short reason (RFC 6455 5.5.1); built only by
    /// [`super::close`], where every code the server sends lives.
    pub(super) fn close(code: u16, reason: &str) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        Frame::copied(&payload, FIN_CLOSE)
    }

    /// A close frame without a status code (the answer to a close that had none).
    pub(super) fn close_empty() -> Frame {
        Frame::copied(&[], FIN_CLOSE)
    }

    fn copied(payload: &[u8], first_byte: u8) -> Frame {
        let mut bytes = Vec::with_capacity(MAX_HEADER + payload.len());
        bytes.resize(MAX_HEADER, 0);
        bytes.extend_from_slice(payload);
        Frame::framed(bytes, first_byte)
    }

    /// A frame from its wire bytes (tests).
    #[cfg(test)]
    pub fn from_wire(bytes: Bytes) -> Frame {
        Frame(bytes)
    }

    /// Whether this is a text frame (else binary).
    pub fn is_text(&self) -> bool {
        self.0.first() == Some(&FIN_TEXT)
    }

    /// Serializes `value` as JSON straight into a text frame: one buffer, no intermediate
    /// string, whatever the payload's size.
    pub fn json(value: &impl Serialize) -> serde_json::Result<Frame> {
        let mut bytes = vec![0; MAX_HEADER];
        serde_json::to_writer(&mut bytes, value)?;
        Ok(Frame::framed(bytes, FIN_TEXT))
    }

    /// Writes the header into the room left before the payload at `bytes[MAX_HEADER..]` and
    /// shares the frame from where its header starts.
    fn framed(mut bytes: Vec<u8>, first_byte: u8) -> Frame {
        let len = bytes.len() - MAX_HEADER;
        let mut header = [0u8; MAX_HEADER];
        header[0] = first_byte;
        let header_len = match len {
            0..=125 => {
                header[1] = len as u8;
                2
            }
            126..=0xFFFF => {
                header[1] = 126;
                header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                header[1] = 127;
                header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        let start = MAX_HEADER - header_len;
        bytes[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
        Frame(Bytes::from(bytes).slice(start..))
    }

    /// The frame as it goes on the wire, shared (cloning it is a reference-count bump).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The payload (the JSON text), without the header.
    pub fn payload(&self) -> &[u8] {
        let header = match self.0.get(1).map(|len| len & 0x7F) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        self.0.get(header..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::{
        CloseFrame,
        frame::{
            Frame as WireFrame,
            coding::{CloseCode, Data, OpCode},
        },
    };

    #[test]
    fn encodes_exactly_as_tungstenite_does_at_every_length_boundary() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 70_000] {
            let payload = "a".repeat(len);
            let ours = Frame::text(&payload);
            let mut theirs = Vec::new();
            WireFrame::message(payload.clone(), OpCode::Data(Data::Text), true)
                .format(&mut theirs)
                .unwrap();
            assert_eq!(&ours.bytes()[..], theirs.as_slice(), "length {len}");
            assert_eq!(ours.payload(), payload.as_bytes());
            let json = Frame::json(&payload).unwrap();
            assert_eq!(json.payload(), format!("\"{payload}\"").as_bytes(), "length {len}");
            assert_eq!(json, Frame::text(&format!("\"{payload}\"")));
            let mut theirs = Vec::new();
            WireFrame::message(payload.clone(), OpCode::Data(Data::Binary), true)
                .format(&mut theirs)
                .unwrap();
            let binary = Frame::binary(payload.as_bytes());
            assert_eq!(&binary.bytes()[..], theirs.as_slice(), "binary, length {len}");
            assert!(!binary.is_text() && ours.is_text());
        }
    }

    #[test]
    fn control_frames_are_encoded_as_tungstenite_does() {
        let format = |frame: WireFrame| {
            let mut bytes = Vec::new();
            frame.format(&mut bytes).unwrap();
            bytes
        };
        assert_eq!(&Frame::ping().bytes()[..], format(WireFrame::ping(Vec::new())));
        assert_eq!(&Frame::pong(b"abc").bytes()[..], format(WireFrame::pong(b"abc".to_vec())));
        let close = CloseFrame { code: CloseCode::from(4008), reason: "slow consumer".into() };
        assert_eq!(
            &Frame::close(4008, "slow consumer").bytes()[..],
            format(WireFrame::close(Some(close)))
        );
        assert_eq!(&Frame::close_empty().bytes()[..], format(WireFrame::close(None)));
    }
}
