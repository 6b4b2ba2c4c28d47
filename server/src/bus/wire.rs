//! What the Redis bus puts on the wire: channel names, the envelope around every message, and
//! the JSON of control events and their acknowledgements.
//!
//! Channels (`P` is the key prefix): `P bus:all` carries broadcasts, `P bus:topic:<name>` a
//! topic's deliveries, `P bus:control` subscription and registration changes,
//! `P bus:node:<id>` the acknowledgements meant for one node, and `P bus:relay:<id>` what relay
//! peers elsewhere send to that node's peers. Every message is an envelope: a version byte, the
//! sender's node id, then the body: a delivery's JSON text, the JSON of a control event or an
//! ack, or a relay message.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Event;
use crate::{delivery::Frame, hub::Target, store::ClientId};

/// The envelope format; a node drops messages of another version rather than misread them.
const ENVELOPE_VERSION: u8 = 1;
/// Version byte and sender id.
const ENVELOPE_HEADER_LEN: usize = 1 + 16;

/// The channel names of one node under one prefix.
pub(super) struct Channels {
    all: String,
    control: String,
    /// Acknowledgements for this node.
    own_acks: String,
    /// Relay messages for this node's peers.
    own_relay: String,
    acks_prefix: String,
    relay_prefix: String,
    topic_prefix: String,
}

/// What a message on one of a node's channels is, by its channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Channel<'a> {
    Broadcast,
    Topic(&'a str),
    Control,
    Ack,
    Relay,
}

impl Channels {
    pub fn new(prefix: &str, node: Uuid) -> Channels {
        Channels {
            all: format!("{prefix}bus:all"),
            control: format!("{prefix}bus:control"),
            own_acks: format!("{prefix}bus:node:{node}"),
            own_relay: format!("{prefix}bus:relay:{node}"),
            acks_prefix: format!("{prefix}bus:node:"),
            relay_prefix: format!("{prefix}bus:relay:"),
            topic_prefix: format!("{prefix}bus:topic:"),
        }
    }

    pub fn control(&self) -> &str {
        &self.control
    }

    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }

    /// Where a delivery to `target` goes.
    pub fn deliveries(&self, target: &Target) -> String {
        match target {
            Target::Broadcast => self.all.clone(),
            Target::Topic(topic) => self.topic(topic),
        }
    }

    /// Where acknowledgements for `node` go.
    pub fn acks(&self, node: Uuid) -> String {
        format!("{}{node}", self.acks_prefix)
    }

    /// Where relay messages for `node`'s peers go.
    pub fn relay(&self, node: Uuid) -> String {
        format!("{}{node}", self.relay_prefix)
    }

    /// Every channel this node listens to, given the topics its sockets are subscribed to.
    pub fn listened(&self, topics: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
        let own = [&self.all, &self.control, &self.own_acks, &self.own_relay];
        let mut channels: Vec<String> = own.into_iter().cloned().collect();
        channels.extend(topics.into_iter().map(|topic| self.topic(topic.as_ref())));
        channels
    }

    /// What a message on `channel` is; none for a channel this node does not listen to.
    pub fn classify<'a>(&self, channel: &'a str) -> Option<Channel<'a>> {
        if let Some(topic) = channel.strip_prefix(&self.topic_prefix) {
            return Some(Channel::Topic(topic));
        }
        let kind = match channel {
            _ if channel == self.all => Channel::Broadcast,
            _ if channel == self.control => Channel::Control,
            _ if channel == self.own_acks => Channel::Ack,
            _ if channel == self.own_relay => Channel::Relay,
            _ => return None,
        };
        Some(kind)
    }
}

/// Wraps `body` in an envelope from `origin`.
pub(super) fn seal(origin: Uuid, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(ENVELOPE_HEADER_LEN + body.len());
    payload.push(ENVELOPE_VERSION);
    payload.extend_from_slice(origin.as_bytes());
    payload.extend_from_slice(body);
    payload
}

/// The sender and body of an envelope of our version.
pub(super) fn open(payload: &[u8]) -> Option<(Uuid, &[u8])> {
    if payload.len() < ENVELOPE_HEADER_LEN || payload[0] != ENVELOPE_VERSION {
        return None;
    }
    let origin = Uuid::from_slice(&payload[1..ENVELOPE_HEADER_LEN]).ok()?;
    Some((origin, &payload[ENVELOPE_HEADER_LEN..]))
}

/// A control event as it crosses nodes.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(super) enum Control {
    Subscribed { client: ClientId, topics: Vec<String> },
    Unsubscribed { client: ClientId, topics: Vec<String> },
    Unregistered { client: ClientId },
    TopicDeleted { topic: String },
}

impl Control {
    /// The control form of `event`, or the delivery it is instead.
    pub fn from_event(event: Event) -> Result<Control, (Target, Frame)> {
        Ok(match event {
            Event::Deliver { target, frame } => return Err((target, frame)),
            Event::Subscribed { client, topics } => Control::Subscribed { client, topics },
            Event::Unsubscribed { client, topics } => Control::Unsubscribed { client, topics },
            Event::Unregistered { client } => Control::Unregistered { client },
            Event::TopicDeleted { topic } => Control::TopicDeleted { topic },
        })
    }

    pub fn into_event(self) -> Event {
        match self {
            Control::Subscribed { client, topics } => Event::Subscribed { client, topics },
            Control::Unsubscribed { client, topics } => Event::Unsubscribed { client, topics },
            Control::Unregistered { client } => Event::Unregistered { client },
            Control::TopicDeleted { topic } => Event::TopicDeleted { topic },
        }
    }
}

/// A control event with the number its acknowledgements refer to.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ControlMessage {
    pub seq: u64,
    #[serde(flatten)]
    pub control: Control,
}

/// A node's answer to a control event: applied, and how many sockets it closed.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Ack {
    pub seq: u64,
    pub closed: u64,
}

/// The JSON of a control message or ack.
pub(super) fn json(value: &impl Serialize) -> Vec<u8> {
    // Serializing these plain structs cannot fail; an empty body would be dropped as malformed.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_under_a_prefix() {
        let node = Uuid::from_u128(7);
        let channels = Channels::new("p:", node);
        assert_eq!(channels.deliveries(&Target::Broadcast), "p:bus:all");
        assert_eq!(channels.deliveries(&Target::Topic("news".into())), "p:bus:topic:news");
        assert_eq!(channels.control(), "p:bus:control");
        assert_eq!(channels.acks(node), format!("p:bus:node:{node}"));
        assert_eq!(channels.relay(node), format!("p:bus:relay:{node}"));
        assert_eq!(
            channels.listened(["a", "b"]),
            [
                "p:bus:all".to_owned(),
                "p:bus:control".into(),
                format!("p:bus:node:{node}"),
                format!("p:bus:relay:{node}"),
                "p:bus:topic:a".into(),
                "p:bus:topic:b".into(),
            ]
        );
    }

    #[test]
    fn channels_are_told_apart_and_other_nodes_channels_are_not_ours() {
        let (node, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let channels = Channels::new("p:", node);
        assert_eq!(channels.classify("p:bus:all"), Some(Channel::Broadcast));
        assert_eq!(channels.classify("p:bus:topic:a:b"), Some(Channel::Topic("a:b")));
        assert_eq!(channels.classify("p:bus:control"), Some(Channel::Control));
        assert_eq!(channels.classify(&channels.acks(node)), Some(Channel::Ack));
        assert_eq!(channels.classify(&channels.relay(node)), Some(Channel::Relay));
        assert_eq!(channels.classify(&channels.acks(other)), None);
        assert_eq!(channels.classify(&channels.relay(other)), None);
        assert_eq!(channels.classify("q:bus:all"), None, "another prefix, another cluster");
    }

    #[test]
    fn envelopes_carry_the_sender_and_refuse_other_versions() {
        let origin = Uuid::from_u128(0xABCD);
        let sealed = seal(origin, b"{\"x\":1}");
        assert_eq!(sealed[0], ENVELOPE_VERSION);
        assert_eq!(sealed.len(), ENVELOPE_HEADER_LEN + 7);
        assert_eq!(open(&sealed), Some((origin, &b"{\"x\":1}"[..])));
        assert_eq!(open(&seal(origin, b"")), Some((origin, &b""[..])), "an empty body");
        let mut other_version = sealed.clone();
        other_version[0] = ENVELOPE_VERSION + 1;
        assert_eq!(open(&other_version), None);
        assert_eq!(open(&sealed[..ENVELOPE_HEADER_LEN - 1]), None, "cut short");
    }

    #[test]
    fn control_messages_and_acks_have_a_fixed_json_form() {
        let client = Uuid::from_u128(5);
        let message = ControlMessage {
            seq: 3,
            control: Control::Subscribed { client, topics: vec!["a".into(), "b".into()] },
        };
        let text = String::from_utf8(json(&message)).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"seq":3,"event":"subscribed","client":"{client}","topics":["a","b"]}}"#)
        );
        assert_eq!(serde_json::from_str::<ControlMessage>(&text).unwrap(), message);
        let deleted =
            ControlMessage { seq: 4, control: Control::TopicDeleted { topic: "t".into() } };
        assert_eq!(json(&deleted), br#"{"seq":4,"event":"topic_deleted","topic":"t"}"#);
        let unregistered = ControlMessage { seq: 5, control: Control::Unregistered { client } };
        let text = format!(r#"{{"seq":5,"event":"unregistered","client":"{client}"}}"#);
        assert_eq!(json(&unregistered), text.as_bytes());
        assert_eq!(json(&Ack { seq: 3, closed: 2 }), br#"{"seq":3,"closed":2}"#);
        assert!(serde_json::from_str::<ControlMessage>(r#"{"seq":1,"event":"nope"}"#).is_err());
    }

    #[test]
    fn events_map_to_control_messages_and_back_but_deliveries_do_not() {
        let client = Uuid::from_u128(9);
        let event = Event::Unsubscribed { client, topics: vec!["x".into()] };
        let control = Control::from_event(event.clone()).unwrap();
        assert_eq!(format!("{:?}", control.into_event()), format!("{event:?}"));
        let delivery = Event::Deliver { target: Target::Broadcast, frame: Frame::text("hi") };
        let (target, frame) = Control::from_event(delivery).unwrap_err();
        assert_eq!((target, frame.payload()), (Target::Broadcast, &b"hi"[..]));
    }
}
