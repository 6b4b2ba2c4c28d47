//! The `Store`: registrations, name reservations, topics and subscriptions, behind one trait so
//! the embedded in-memory store and a shared store (Redis) are swapped at construction only.
//!
//! Every method that changes several records does so atomically: a subscribe to three topics,
//! one of which does not exist, changes nothing.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// A client's id: a v4 UUID, and a bearer secret.
pub type ClientId = Uuid;

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: ClientId,
    pub name: String,
}

/// A client's topics: sorted, without duplicates. A client has few topics, and every client
/// (registered, and connected) holds a set: a Vec holds one topic in 24 bytes where a B-tree
/// node takes ~280 and a hash set ~100.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSet(Vec<String>);

impl TopicSet {
    /// Adds `topic`; false when it was there.
    pub fn insert(&mut self, topic: &str) -> bool {
        let Err(at) = self.find(topic) else {
            return false;
        };
        if self.0.len() < 8 {
            // Grow one at a time while small: no room kept for topics never added.
            self.0.reserve_exact(1);
        }
        self.0.insert(at, topic.to_owned());
        true
    }

    /// Removes `topic`; false when it was not there.
    pub fn remove(&mut self, topic: &str) -> bool {
        self.find(topic).map(|at| self.0.remove(at)).is_ok()
    }

    pub fn contains(&self, topic: &str) -> bool {
        self.find(topic).is_ok()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    /// The topics, sorted.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.clone()
    }

    fn find(&self, topic: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|held| held.as_str().cmp(topic))
    }
}

impl From<Vec<String>> for TopicSet {
    fn from(mut topics: Vec<String>) -> Self {
        topics.sort_unstable();
        topics.dedup();
        topics.shrink_to_fit();
        TopicSet(topics)
    }
}

impl<'a> IntoIterator for &'a TopicSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A topic and how many clients are subscribed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub subscribers: u64,
}

/// How much of a topic's past the store keeps: at most `size` messages, none older than `ttl`.
/// Either being zero keeps none (positions are still assigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    pub size: u32,
    pub ttl: Duration,
}

impl HistorySettings {
    /// Whether any message is kept.
    pub fn keeps(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

impl Default for HistorySettings {
    /// The defaults of `--history-size` and `--history-ttl`.
    fn default() -> Self {
        HistorySettings { size: 100, ttl: Duration::from_secs(300) }
    }
}

/// Where a topic's stream stands: the offset of its last message (0 before the first) and its
/// epoch, which changes whenever the topic's past is lost (the topic deleted and made again,
/// the store's data gone), so a client can tell an offset of another life of the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// What publishing to a topic did: how many clients it targets, and the message's position.
/// `duplicate`: the idempotency key was seen within the window, so nothing was published and
/// this is the first publish's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub subscribers: u64,
    pub position: Position,
    pub duplicate: bool,
}

/// A publish's idempotency key: the same key on the same topic within `window` publishes once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub window: Duration,
}

/// A message for a topic: its sender's name (`None` when sent with the API key), its data as
/// JSON text, and its idempotency key if it has one.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub from: Option<&'a str>,
    pub data: &'a str,
    pub idempotency: Option<Idempotency<'a>>,
}

/// Idempotency keys a topic remembers at most (the oldest are forgotten first), so a flood of
/// distinct keys cannot grow a topic without bound.
pub const MAX_IDEMPOTENCY_KEYS: usize = 10_000;

/// A message the store kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub offset: u64,
    /// The sender's name; `None` when sent with the API key.
    pub from: Option<String>,
    /// The message as JSON text, exactly as published.
    pub data: String,
}

/// The kept messages after some offset, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The topic's position now.
    pub position: Position,
    /// The offset of the oldest message kept (the next offset when none is).
    pub oldest: u64,
    pub messages: Vec<HistoryEntry>,
}

/// A client with live sockets, on nodes that are alive, and subscribed to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    pub client: ClientId,
    pub name: String,
    /// Its live sockets on every node together.
    pub connections: u64,
}

/// How long a node that stopped beating is remembered before its socket counts are dropped:
/// long enough that one back from a pause (a stalled host, a store outage) counts again.
pub const FORGET_SILENT_NODES: Duration = Duration::from_secs(3600);

/// A new epoch: unique with overwhelming probability.
pub(crate) fn new_epoch() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// Where one relay peer is: its node, and its number on that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    pub node: Uuid,
    pub peer: u64,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.node, self.peer)
    }
}

impl std::str::FromStr for PeerAddr {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || StoreError::Unavailable(format!("malformed relay peer address `{text}`"));
        let (node, peer) = text.split_once('/').ok_or_else(bad)?;
        Ok(PeerAddr {
            node: Uuid::parse_str(node).map_err(|_| bad())?,
            peer: peer.parse().map_err(|_| bad())?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("unknown client")]
    UnknownClient,
    #[error("name `{0}` is taken")]
    NameTaken(String),
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    #[error("topic `{0}` exists")]
    TopicExists(String),
    #[error("{0}")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where registrations, topics and subscriptions live. Names and topics are validated by the
/// caller; the store enforces uniqueness and existence.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a client under `name`, or under a generated unique name when `None`.
    async fn register(&self, name: Option<&str>) -> StoreResult<Client>;
    /// The client with this id.
    async fn client(&self, id: ClientId) -> StoreResult<Client>;
    /// Removes the client, its name and its subscriptions; returns what was removed.
    async fn unregister(&self, id: ClientId) -> StoreResult<Client>;
    /// How many clients are registered.
    async fn client_count(&self) -> StoreResult<u64>;
    /// The ids among `ids` that are not registered.
    async fn unknown_clients(&self, ids: &[ClientId]) -> StoreResult<Vec<ClientId>>;
    /// Creates a topic that keeps `history`, with a new epoch; `TopicExists` if it exists.
    async fn create_topic(&self, name: &str, history: HistorySettings) -> StoreResult<()>;
    /// Deletes a topic and every subscription to it; returns the clients that were subscribed.
    async fn delete_topic(&self, name: &str) -> StoreResult<Vec<ClientId>>;
    /// Every topic with its subscriber count, sorted by name.
    async fn topics(&self) -> StoreResult<Vec<TopicInfo>>;
    /// How many topics exist.
    async fn topic_count(&self) -> StoreResult<u64>;
    /// How many clients are subscribed to an existing topic.
    async fn subscriber_count(&self, topic: &str) -> StoreResult<u64>;
    /// Gives a message to an existing topic: the next offset (no gaps), kept in its history as
    /// its settings say, in one atomic step; counts the subscribers with it. With `idempotency`,
    /// a key the topic saw within the window publishes nothing and answers as the first time.
    async fn publish(&self, topic: &str, message: NewMessage<'_>) -> StoreResult<Published>;
    /// The topic's kept messages with offsets above `since`, oldest first, at most `limit`.
    async fn history(&self, topic: &str, since: u64, limit: usize) -> StoreResult<HistoryPage>;
    /// Subscribes the client to every topic, or (unknown client, missing topic) to none.
    async fn subscribe(&self, id: ClientId, topics: &[String]) -> StoreResult<()>;
    /// Unsubscribes the client from every topic, or (unknown client, missing topic) from none.
    async fn unsubscribe(&self, id: ClientId, topics: &[String]) -> StoreResult<()>;
    /// The client's topics, sorted.
    async fn subscriptions(&self, id: ClientId) -> StoreResult<Vec<String>>;
    /// Client `client` has `delta` more (negative: fewer) live sockets on node `node`.
    async fn sockets_changed(&self, node: Uuid, client: ClientId, delta: i64) -> StoreResult<()>;
    /// The clients subscribed to an existing topic with live sockets on nodes that are alive,
    /// sorted by name.
    async fn presence(&self, topic: &str) -> StoreResult<Vec<Present>>;
    /// Node `node` is alive for `ttl` more; without another call by then, its sockets stop
    /// counting (it died without saying so), and after [`FORGET_SILENT_NODES`] more they are
    /// forgotten.
    async fn node_alive(&self, node: Uuid, ttl: Duration) -> StoreResult<()>;
    /// Node `node` stopped: its sockets stop counting now.
    async fn node_gone(&self, node: Uuid) -> StoreResult<()>;
    /// Relay rendezvous for `id`: takes the peer waiting with it (which then waits no more), or
    /// when none does, makes `me` the one that waits. `me` already waiting: `None`, no change.
    /// At most one peer waits per id, on every node together.
    async fn relay_meet(&self, id: &str, me: PeerAddr) -> StoreResult<Option<PeerAddr>>;
    /// `me` stops waiting with `id`; false when it was not waiting (another peer took it).
    async fn relay_leave(&self, id: &str, me: PeerAddr) -> StoreResult<bool>;
    /// Succeeds when the store can serve requests.
    async fn ping(&self) -> StoreResult<()>;
}

/// What a client or topic name may be, in words (error messages).
pub const NAME_RULE: &str = "1-64 of A-Za-z0-9_.-";

/// What a client or topic name may be, as a pattern (the OpenAPI spec).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// Checks a client or topic name against [`NAME_RULE`] (the one place it is enforced).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A generated client name, unique with overwhelming probability (the store still checks).
pub(crate) fn generated_name() -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("client-{}", &id[..12])
}
