//! Server-to-client frames encoded once. A server frame is unmasked (RFC 6455 5.1), so header and
//! payload are the same bytes for every recipient: a delivery hands each socket a clone of one
//! [`Frame`] (a reference-count bump) and the connection writes those bytes as they are.

use bytes::Bytes;

/// One complete WebSocket text frame (FIN, opcode, length, payload), shared by every recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Encodes `payload` as a single final text frame.
    pub fn text(payload: &str) -> Frame {
        const FIN_TEXT: u8 = 0x80 | 0x1;
        let len = payload.len();
        let mut bytes = Vec::with_capacity(len + 10);
        bytes.push(FIN_TEXT);
        match len {
            0..=125 => bytes.push(len as u8),
            126..=0xFFFF => {
                bytes.push(126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                bytes.push(127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(payload.as_bytes());
        Frame(Bytes::from(bytes))
    }

    /// The frame as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
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

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame as WireFrame,
        coding::{Data, OpCode},
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
            assert_eq!(ours.as_bytes(), theirs.as_slice(), "length {len}");
            assert_eq!(ours.payload(), payload.as_bytes());
        }
    }
}
