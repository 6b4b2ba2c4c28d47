//! Client-to-server frames decoded as they arrive (RFC 6455 5): the socket reads into a buffer
//! on its stack and hands the bytes here, so an idle connection holds no read buffer; only the
//! bytes of a frame not yet complete are kept.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

use crate::delivery::CloseReason;

/// FIN bit of the first header byte.
const FIN: u8 = 0x80;
/// RSV1-3: no extension is negotiated, so they must be clear.
const RSV: u8 = 0x70;
/// MASK bit of the second header byte: every client frame is masked (RFC 6455 5.3).
const MASK: u8 = 0x80;
/// The longest payload of a control frame (RFC 6455 5.5).
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One complete thing a client sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    /// A text message, valid UTF-8.
    Text(String),
    Binary(Vec<u8>),
    /// A ping, with the payload its pong must carry.
    Ping(Vec<u8>),
    Pong,
    /// A close frame: its status code, if it has one (the reason is checked, then dropped).
    Close(Option<u16>),
}

/// Why a client's bytes are refused; each maps to a close code (RFC 6455 7.4.1).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid UTF-8")]
    Utf8,
    #[error("message too big")]
    TooBig,
}

impl DecodeError {
    /// The close that answers it.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            DecodeError::Protocol(_) => CloseReason::ProtocolError,
            DecodeError::Utf8 => CloseReason::InvalidUtf8,
            DecodeError::TooBig => CloseReason::TooBig,
        }
    }
}

/// The decoding state of one socket: nothing allocated between messages.
#[derive(Default)]
pub(super) struct Decoder {
    /// What is kept between reads, only while there is any: boxed, as every socket has a
    /// decoder and most keep nothing.
    kept: Option<Box<Kept>>,
}

/// What a decoder keeps between reads.
#[derive(Default)]
struct Kept {
    /// Bytes of a frame not yet complete.
    partial: BytesMut,
    /// A fragmented message in progress: its opcode and the payload so far.
    message: Option<(u8, Vec<u8>)>,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, including the masking key.
    len: usize,
    payload_len: usize,
}

impl Decoder {
    /// Decodes `input` (what was just read) after any partial frame kept from before, pushing
    /// every complete message or control frame to `out`; messages (and frames) over
    /// `max_message` bytes are refused. A frame left incomplete is kept for the next call.
    /// After an error the socket must be closed: nothing more is decoded.
    pub fn decode(
        &mut self,
        input: &[u8],
        max_message: usize,
        out: &mut VecDeque<Incoming>,
    ) -> Result<(), DecodeError> {
        let mut fresh = Kept::default();
        let kept = match &mut self.kept {
            Some(kept) => kept.as_mut(),
            None => &mut fresh,
        };
        let result = kept.decode(input, max_message, out);
        let nothing_kept = kept.partial.is_empty() && kept.message.is_none();
        if nothing_kept {
            self.kept = None;
        } else if self.kept.is_none() {
            self.kept = Some(Box::new(fresh));
        }
        result
    }
}

impl Kept {
    fn decode(
        &mut self,
        input: &[u8],
        max_message: usize,
        out: &mut VecDeque<Incoming>,
    ) -> Result<(), DecodeError> {
        if self.partial.is_empty() {
            let used = self.decode_frames(input, max_message, out)?;
            self.partial.extend_from_slice(&input[used..]);
        } else {
            self.partial.extend_from_slice(input);
            let mut partial = std::mem::take(&mut self.partial);
            let used = self.decode_frames(&partial, max_message, out);
            match used {
                Ok(used) => partial.advance(used),
                Err(err) => return Err(err),
            }
            self.partial = partial;
        }
        if self.partial.is_empty() && self.partial.capacity() > 0 {
            // Between frames an idle socket keeps no buffer.
            self.partial = BytesMut::new();
        }
        Ok(())
    }

    /// Decodes the complete frames at the start of `bytes`; returns how many bytes they took.
    fn decode_frames(
        &mut self,
        bytes: &[u8],
        max_message: usize,
        out: &mut VecDeque<Incoming>,
    ) -> Result<usize, DecodeError> {
        let mut used = 0;
        while let Some(header) = header(&bytes[used..], max_message)? {
            let frame_len = header.len + header.payload_len;
            let Some(frame) = bytes.get(used..used + frame_len) else {
                break;
            };
            let mut payload = frame[header.len..].to_vec();
            unmask(&mut payload, header.mask);
            if let Some(incoming) = self.frame(&header, payload, max_message)? {
                out.push_back(incoming);
            }
            used += frame_len;
        }
        Ok(used)
    }

    /// Applies one complete, unmasked frame: a message or control frame once complete.
    fn frame(
        &mut self,
        header: &Header,
        payload: Vec<u8>,
        max_message: usize,
    ) -> Result<Option<Incoming>, DecodeError> {
        let (opcode, payload) = match (header.opcode, self.message.take()) {
            (OP_PING, message) => {
                self.message = message;
                return Ok(Some(Incoming::Ping(payload)));
            }
            (OP_PONG, message) => {
                self.message = message;
                return Ok(Some(Incoming::Pong));
            }
            (OP_CLOSE, _) => return close(&payload).map(Some),
            (OP_TEXT | OP_BINARY, Some(_)) => {
                return Err(DecodeError::Protocol("new message before the last one ended"));
            }
            (OP_CONTINUATION, None) => {
                return Err(DecodeError::Protocol("continuation without a message"));
            }
            // A new text or binary message (no other opcode passes the header check).
            (_, None) => (header.opcode, payload),
            (_, Some((opcode, mut data))) => {
                if data.len() + payload.len() > max_message {
                    return Err(DecodeError::TooBig);
                }
                data.extend_from_slice(&payload);
                (opcode, data)
            }
        };
        if !header.fin {
            self.message = Some((opcode, payload));
            return Ok(None);
        }
        Ok(Some(match opcode {
            OP_TEXT => Incoming::Text(String::from_utf8(payload).map_err(|_| DecodeError::Utf8)?),
            _ => Incoming::Binary(payload),
        }))
    }
}

/// The header at the start of `bytes`, checked, or none while it is incomplete.
fn header(bytes: &[u8], max_message: usize) -> Result<Option<Header>, DecodeError> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & RSV != 0 {
        return Err(DecodeError::Protocol("reserved bits set"));
    }
    let (fin, opcode) = (first & FIN != 0, first & 0x0F);
    if !matches!(opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
        return Err(DecodeError::Protocol("unknown opcode"));
    }
    if second & MASK == 0 {
        return Err(DecodeError::Protocol("unmasked client frame"));
    }
    let (length_bytes, short_len) = match second & 0x7F {
        126 => (2, None),
        127 => (8, None),
        len => (0, Some(usize::from(len))),
    };
    let len = 2 + length_bytes + 4;
    let Some(rest) = bytes.get(2..len) else {
        return Ok(None);
    };
    let payload_len = match short_len {
        Some(len) => len,
        None => {
            let mut be = [0u8; 8];
            be[8 - length_bytes..].copy_from_slice(&rest[..length_bytes]);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(DecodeError::Protocol("payload length has its top bit set"));
            }
            usize::try_from(len).map_err(|_| DecodeError::TooBig)?
        }
    };
    let is_control = opcode & 0x8 != 0;
    if is_control && (!fin || payload_len > MAX_CONTROL) {
        return Err(DecodeError::Protocol("fragmented or oversize control frame"));
    }
    // Refused before it is buffered.
    if payload_len > max_message {
        return Err(DecodeError::TooBig);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&rest[length_bytes..]);
    Ok(Some(Header { fin, opcode, mask, len, payload_len }))
}

/// A close frame's payload: none, or a valid status code and a UTF-8 reason (RFC 6455 5.5.1).
fn close(payload: &[u8]) -> Result<Incoming, DecodeError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.len() {
            0 => Ok(Incoming::Close(None)),
            _ => Err(DecodeError::Protocol("close payload of one byte")),
        };
    };
    let code = u16::from_be_bytes(*code);
    // 1004-1006 and 1015 are reserved, never sent; 1016-2999 are unassigned.
    let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !valid {
        return Err(DecodeError::Protocol("invalid close code"));
    }
    std::str::from_utf8(reason).map_err(|_| DecodeError::Utf8)?;
    Ok(Incoming::Close(Some(code)))
}

/// Unmasks (or masks) `payload` with the frame's key.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload.len() {
            len @ 0..=125 => bytes.push(MASK | len as u8),
            len @ 126..=0xFFFF => {
                bytes.push(MASK | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                bytes.push(MASK | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(&KEY);
        let mut masked = payload.to_vec();
        unmask(&mut masked, KEY);
        bytes.extend_from_slice(&masked);
        bytes
    }

    fn decode_all(max: usize, input: &[u8]) -> Result<Vec<Incoming>, DecodeError> {
        let mut out = VecDeque::new();
        Decoder::default().decode(input, max, &mut out)?;
        Ok(out.into())
    }

    #[test]
    fn decodes_messages_of_every_length_whole_and_byte_by_byte() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 70_000] {
            let text = "é".repeat(len / 2) + &"a".repeat(len % 2);
            let mut wire = frame(FIN | OP_TEXT, text.as_bytes());
            wire.extend(frame(FIN | OP_BINARY, &[7; 3]));
            let expected = vec![Incoming::Text(text.clone()), Incoming::Binary(vec![7; 3])];
            assert_eq!(decode_all(100_000, &wire).unwrap(), expected, "length {len}");

            let mut decoder = Decoder::default();
            let mut out = VecDeque::new();
            let step = if len > 1000 { 997 } else { 1 };
            for piece in wire.chunks(step) {
                decoder.decode(piece, 100_000, &mut out).unwrap();
            }
            assert_eq!(Vec::from(out), expected, "length {len} in pieces of {step}");
            assert!(decoder.kept.is_none(), "nothing is kept between frames");
        }
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut wire = frame(OP_TEXT, b"hel");
        wire.extend(frame(FIN | OP_PING, b"p"));
        wire.extend(frame(OP_CONTINUATION, b"lo "));
        wire.extend(frame(FIN | OP_PONG, b""));
        wire.extend(frame(FIN | OP_CONTINUATION, "wörld".as_bytes()));
        wire.extend(frame(FIN | OP_CLOSE, &[0x03, 0xE8, b'o', b'k']));
        wire.extend(frame(FIN | OP_CLOSE, b""));
        assert_eq!(
            decode_all(1024, &wire).unwrap(),
            vec![
                Incoming::Ping(b"p".to_vec()),
                Incoming::Pong,
                Incoming::Text("hello wörld".into()),
                Incoming::Close(Some(1000)),
                Incoming::Close(None),
            ]
        );
    }

    #[test]
    fn a_text_split_inside_a_character_is_valid_once_whole() {
        let bytes = "ü".as_bytes();
        let mut wire = frame(OP_TEXT, &bytes[..1]);
        wire.extend(frame(FIN | OP_CONTINUATION, &bytes[1..]));
        assert_eq!(decode_all(16, &wire).unwrap(), vec![Incoming::Text("ü".into())]);
    }

    #[test]
    fn protocol_violations_are_refused_with_their_close_codes() {
        let protocol = |wire: Vec<u8>| decode_all(1024, &wire).unwrap_err().close_reason().code();
        assert_eq!(protocol(frame(FIN | 0x40 | OP_TEXT, b"x")), 1002, "RSV1 without an extension");
        assert_eq!(protocol(frame(FIN | 0x3, b"x")), 1002, "reserved data opcode");
        assert_eq!(protocol(frame(FIN | 0xB, b"x")), 1002, "reserved control opcode");
        assert_eq!(protocol(frame(OP_PING, b"x")), 1002, "fragmented control frame");
        assert_eq!(protocol(frame(FIN | OP_PING, &[0; 126])), 1002, "oversize control frame");
        assert_eq!(protocol(frame(FIN | OP_CONTINUATION, b"x")), 1002, "continuation first");
        let mut two_starts = frame(OP_TEXT, b"a");
        two_starts.extend(frame(FIN | OP_TEXT, b"b"));
        assert_eq!(protocol(two_starts), 1002, "a new message inside a fragmented one");
        let mut unmasked = frame(FIN | OP_TEXT, b"");
        unmasked[1] &= !MASK;
        assert_eq!(protocol(unmasked), 1002, "unmasked");
        let mut huge = vec![FIN | OP_BINARY, MASK | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&KEY);
        assert_eq!(protocol(huge), 1002, "64-bit length with its top bit set");
        assert_eq!(protocol(frame(FIN | OP_CLOSE, &[3])), 1002, "one-byte close payload");
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(protocol(frame(FIN | OP_CLOSE, &code.to_be_bytes())), 1002, "code {code}");
        }
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            let close = decode_all(1024, &frame(FIN | OP_CLOSE, &code.to_be_bytes())).unwrap();
            assert_eq!(close, vec![Incoming::Close(Some(code))]);
        }
    }

    #[test]
    fn invalid_utf8_and_oversize_messages_get_1007_and_1009() {
        let code = |max, wire: Vec<u8>| decode_all(max, &wire).unwrap_err().close_reason().code();
        assert_eq!(code(64, frame(FIN | OP_TEXT, &[0xC3, 0x28])), 1007);
        assert_eq!(code(64, frame(FIN | OP_CLOSE, &[0x03, 0xE8, 0xFF])), 1007, "close reason");
        assert_eq!(code(64, frame(FIN | OP_TEXT, &[b'a'; 65])), 1009);
        // Refused from the header alone, before the payload arrives.
        assert_eq!(code(64, frame(FIN | OP_BINARY, &[0; 1000])[..8].to_vec()), 1009);
        let mut fragments = frame(OP_TEXT, &[b'a'; 40]);
        fragments.extend(frame(FIN | OP_CONTINUATION, &[b'a'; 40]));
        assert_eq!(code(64, fragments), 1009, "the message, not only each frame");
        assert!(decode_all(64, &frame(FIN | OP_TEXT, &[b'a'; 64])).is_ok());
    }
}
