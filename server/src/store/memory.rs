//! The embedded in-memory store: one node, no other service, state lost at exit.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use dashmap::{DashMap, Entry};

use super::{
    Client, ClientId, FORGET_SILENT_NODES, HistoryEntry, HistoryPage, HistorySettings, Idempotency,
    MAX_IDEMPOTENCY_KEYS, NewMessage, PeerAddr, Position, Present, Published, Store, StoreError,
    StoreResult, TopicInfo, TopicSet, generated_name, new_epoch,
};

#[derive(Default)]
struct State {
    clients: HashMap<ClientId, ClientRecord>,
    names: HashMap<String, ClientId>,
    topics: BTreeMap<String, TopicRecord>,
}

struct TopicRecord {
    subscribers: BTreeSet<ClientId>,
    /// Its own lock: publishing holds the state's lock shared and this one, so publishers to
    /// different topics never wait on each other.
    history: Mutex<TopicHistory>,
}

impl TopicRecord {
    fn new(settings: HistorySettings) -> Self {
        let history = TopicHistory {
            epoch: new_epoch(),
            settings,
            last: 0,
            kept: VecDeque::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
        };
        TopicRecord { subscribers: BTreeSet::new(), history: Mutex::new(history) }
    }
}

/// A topic's offsets and the messages it keeps, oldest first.
struct TopicHistory {
    epoch: String,
    settings: HistorySettings,
    /// The last offset given (0 before the first message).
    last: u64,
    kept: VecDeque<KeptMessage>,
    /// Idempotency keys seen lately, with the answer their first publish got.
    keys: HashMap<Box<str>, FirstPublish>,
    /// The same keys, oldest first, to forget them in order.
    key_order: VecDeque<(Instant, Box<str>)>,
}

#[derive(Clone, Copy)]
struct FirstPublish {
    at: Instant,
    offset: u64,
    subscribers: u64,
}

struct KeptMessage {
    offset: u64,
    at: Instant,
    from: Option<Box<str>>,
    data: Box<str>,
}

impl TopicHistory {
    fn append(&mut self, from: Option<&str>, data: &str, now: Instant) -> Position {
        self.last += 1;
        if self.settings.keeps() {
            let (from, data) = (from.map(Box::from), Box::from(data));
            self.kept.push_back(KeptMessage { offset: self.last, at: now, from, data });
            while self.kept.len() > self.settings.size as usize {
                self.kept.pop_front();
            }
        }
        self.expire(now);
        self.position()
    }

    /// The first answer to a publish with this key within its window, if there was one.
    fn seen(&mut self, idempotency: Idempotency<'_>, now: Instant) -> Option<Published> {
        while let Some((at, key)) = self.key_order.front() {
            let expired = now.duration_since(*at) > idempotency.window;
            if !expired && self.key_order.len() <= MAX_IDEMPOTENCY_KEYS {
                break;
            }
            if self.keys.get(key).is_some_and(|first| first.at == *at) {
                self.keys.remove(key);
            }
            self.key_order.pop_front();
        }
        let first = self.keys.get(idempotency.key)?;
        let position = Position { offset: first.offset, epoch: self.epoch.clone() };
        Some(Published { subscribers: first.subscribers, position, duplicate: true })
    }

    fn remember(&mut self, key: &str, published: &Published, now: Instant) {
        let first = FirstPublish {
            at: now,
            offset: published.position.offset,
            subscribers: published.subscribers,
        };
        self.keys.insert(Box::from(key), first);
        self.key_order.push_back((now, Box::from(key)));
    }

    /// Drops what is older than the settings' time to live.
    fn expire(&mut self, now: Instant) {
        let ttl = self.settings.ttl;
        while self.kept.front().is_some_and(|kept| now.duration_since(kept.at) > ttl) {
            self.kept.pop_front();
        }
    }

    fn position(&self) -> Position {
        Position { offset: self.last, epoch: self.epoch.clone() }
    }

    fn page(&mut self, since: u64, limit: usize, now: Instant) -> HistoryPage {
        self.expire(now);
        let oldest = self.kept.front().map_or(self.last + 1, |kept| kept.offset);
        let messages = self
            .kept
            .iter()
            .filter(|kept| kept.offset > since)
            .take(limit)
            .map(|kept| HistoryEntry {
                offset: kept.offset,
                from: kept.from.as_deref().map(str::to_owned),
                data: kept.data.to_string(),
            })
            .collect();
        HistoryPage { position: self.position(), oldest, messages }
    }
}

struct ClientRecord {
    name: String,
    topics: TopicSet,
}

/// One lock over all records keeps multi-record changes atomic; every critical section is a few
/// map operations and never awaits. Publishing takes it shared, so readers do not wait on each
/// other.
#[derive(Default)]
pub struct MemoryStore {
    state: RwLock<State>,
    /// Relay id to the peer waiting with it; apart from `state`, so pairing never waits on it.
    relay_waiting: DashMap<String, PeerAddr>,
    /// Live sockets per node and client, apart from `state`: sockets come and go often.
    nodes: Mutex<HashMap<Uuid, NodeSockets>>,
}

/// One node's live sockets, counted while the node is alive.
#[derive(Default)]
struct NodeSockets {
    alive_until: Option<Instant>,
    clients: HashMap<ClientId, u64>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl State {
    fn record(&self, id: ClientId) -> StoreResult<&ClientRecord> {
        self.clients.get(&id).ok_or(StoreError::UnknownClient)
    }

    fn topic(&self, name: &str) -> StoreResult<&TopicRecord> {
        self.topics.get(name).ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))
    }

    /// Applies the change to every topic, or (unknown client, missing topic) to none.
    fn change_subscriptions(
        &mut self,
        id: ClientId,
        topics: &[String],
        change: Change,
    ) -> StoreResult<()> {
        let record = self.clients.get_mut(&id).ok_or(StoreError::UnknownClient)?;
        if let Some(missing) = topics.iter().find(|topic| !self.topics.contains_key(*topic)) {
            return Err(StoreError::TopicNotFound(missing.clone()));
        }
        for topic in topics {
            let subscribers = self.topics.get_mut(topic).map(|record| &mut record.subscribers);
            match change {
                Change::Subscribe => {
                    if let Some(subscribers) = subscribers {
                        subscribers.insert(id);
                    }
                    record.topics.insert(topic);
                }
                Change::Unsubscribe => {
                    if let Some(subscribers) = subscribers {
                        subscribers.remove(&id);
                    }
                    record.topics.remove(topic);
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Change {
    Subscribe,
    Unsubscribe,
}

#[async_trait]
impl Store for MemoryStore {
    async fn register(&self, name: Option<&str>) -> StoreResult<Client> {
        let mut state = self.state.write();
        let name = match name {
            Some(name) if state.names.contains_key(name) => {
                return Err(StoreError::NameTaken(name.to_owned()));
            }
            Some(name) => name.to_owned(),
            None => loop {
                let candidate = generated_name();
                if !state.names.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let id = Uuid::new_v4();
        state.names.insert(name.clone(), id);
        state.clients.insert(id, ClientRecord { name: name.clone(), topics: TopicSet::default() });
        Ok(Client { id, name })
    }

    async fn client(&self, id: ClientId) -> StoreResult<Client> {
        let state = self.state.read();
        let record = state.record(id)?;
        Ok(Client { id, name: record.name.clone() })
    }

    async fn unregister(&self, id: ClientId) -> StoreResult<Client> {
        let mut state = self.state.write();
        let record = state.clients.remove(&id).ok_or(StoreError::UnknownClient)?;
        state.names.remove(&record.name);
        for topic in &record.topics {
            if let Some(topic) = state.topics.get_mut(topic) {
                topic.subscribers.remove(&id);
            }
        }
        Ok(Client { id, name: record.name })
    }

    async fn client_count(&self) -> StoreResult<u64> {
        Ok(self.state.read().clients.len() as u64)
    }

    async fn topic_count(&self) -> StoreResult<u64> {
        Ok(self.state.read().topics.len() as u64)
    }

    async fn unknown_clients(&self, ids: &[ClientId]) -> StoreResult<Vec<ClientId>> {
        let state = self.state.read();
        Ok(ids.iter().filter(|id| !state.clients.contains_key(id)).copied().collect())
    }

    async fn create_topic(&self, name: &str, history: HistorySettings) -> StoreResult<()> {
        let mut state = self.state.write();
        if state.topics.contains_key(name) {
            return Err(StoreError::TopicExists(name.to_owned()));
        }
        state.topics.insert(name.to_owned(), TopicRecord::new(history));
        Ok(())
    }

    async fn delete_topic(&self, name: &str) -> StoreResult<Vec<ClientId>> {
        let mut state = self.state.write();
        let record =
            state.topics.remove(name).ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))?;
        let subscribers = record.subscribers;
        for id in &subscribers {
            if let Some(record) = state.clients.get_mut(id) {
                record.topics.remove(name);
            }
        }
        Ok(subscribers.into_iter().collect())
    }

    async fn topics(&self) -> StoreResult<Vec<TopicInfo>> {
        let state = self.state.read();
        Ok(state
            .topics
            .iter()
            .map(|(name, record)| TopicInfo {
                name: name.clone(),
                subscribers: record.subscribers.len() as u64,
            })
            .collect())
    }

    async fn subscriber_count(&self, topic: &str) -> StoreResult<u64> {
        let state = self.state.read();
        Ok(state.topic(topic)?.subscribers.len() as u64)
    }

    async fn publish(&self, topic: &str, message: NewMessage<'_>) -> StoreResult<Published> {
        let NewMessage { from, data, idempotency } = message;
        let state = self.state.read();
        let record = state.topic(topic)?;
        let now = Instant::now();
        let mut history = record.history.lock();
        if let Some(first) = idempotency.and_then(|idempotency| history.seen(idempotency, now)) {
            return Ok(first);
        }
        let position = history.append(from, data, now);
        let subscribers = record.subscribers.len() as u64;
        let published = Published { subscribers, position, duplicate: false };
        if let Some(idempotency) = idempotency {
            history.remember(idempotency.key, &published, now);
        }
        Ok(published)
    }

    async fn history(&self, topic: &str, since: u64, limit: usize) -> StoreResult<HistoryPage> {
        let state = self.state.read();
        let page = state.topic(topic)?.history.lock().page(since, limit, Instant::now());
        Ok(page)
    }

    async fn subscribe(&self, id: ClientId, topics: &[String]) -> StoreResult<()> {
        self.state.write().change_subscriptions(id, topics, Change::Subscribe)
    }

    async fn unsubscribe(&self, id: ClientId, topics: &[String]) -> StoreResult<()> {
        self.state.write().change_subscriptions(id, topics, Change::Unsubscribe)
    }

    async fn subscriptions(&self, id: ClientId) -> StoreResult<Vec<String>> {
        let state = self.state.read();
        Ok(state.record(id)?.topics.to_vec())
    }

    async fn sockets_changed(&self, node: Uuid, client: ClientId, delta: i64) -> StoreResult<()> {
        let mut nodes = self.nodes.lock();
        let sockets = nodes.entry(node).or_default();
        let count = sockets.clients.get(&client).copied().unwrap_or(0).saturating_add_signed(delta);
        if count == 0 {
            sockets.clients.remove(&client);
        } else {
            sockets.clients.insert(client, count);
        }
        Ok(())
    }

    async fn presence(&self, topic: &str) -> StoreResult<Vec<Present>> {
        let now = Instant::now();
        let mut connections: HashMap<ClientId, u64> = HashMap::new();
        {
            let mut nodes = self.nodes.lock();
            nodes.retain(|_, sockets| {
                sockets.alive_until.is_none_or(|until| now < until + FORGET_SILENT_NODES)
            });
            let live = nodes
                .values()
                .filter(|sockets| sockets.alive_until.is_some_and(|until| until > now));
            for (client, count) in live.flat_map(|sockets| &sockets.clients) {
                *connections.entry(*client).or_default() += count;
            }
        }
        let state = self.state.read();
        let mut present: Vec<Present> = state
            .topic(topic)?
            .subscribers
            .iter()
            .filter_map(|client| {
                let connections = *connections.get(client)?;
                let name = state.clients.get(client)?.name.clone();
                Some(Present { client: *client, name, connections })
            })
            .collect();
        present.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(present)
    }

    async fn node_alive(&self, node: Uuid, ttl: Duration) -> StoreResult<()> {
        self.nodes.lock().entry(node).or_default().alive_until = Some(Instant::now() + ttl);
        Ok(())
    }

    async fn node_gone(&self, node: Uuid) -> StoreResult<()> {
        self.nodes.lock().remove(&node);
        Ok(())
    }

    async fn relay_meet(&self, id: &str, me: PeerAddr) -> StoreResult<Option<PeerAddr>> {
        match self.relay_waiting.entry(id.to_owned()) {
            Entry::Occupied(waiting) if *waiting.get() == me => Ok(None),
            Entry::Occupied(waiting) => Ok(Some(waiting.remove())),
            Entry::Vacant(slot) => {
                slot.insert(me);
                Ok(None)
            }
        }
    }

    async fn relay_leave(&self, id: &str, me: PeerAddr) -> StoreResult<bool> {
        Ok(self.relay_waiting.remove_if(id, |_, waiting| *waiting == me).is_some())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
