//! The embedded in-memory store: one node, no other service, state lost at exit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use parking_lot::RwLock;
use uuid::Uuid;

use dashmap::{DashMap, Entry};

use super::{
    Client, ClientId, PeerAddr, Store, StoreError, StoreResult, TopicInfo, TopicSet, generated_name,
};

#[derive(Default)]
struct State {
    clients: HashMap<ClientId, ClientRecord>,
    names: HashMap<String, ClientId>,
    /// Topic name to its subscribers.
    topics: BTreeMap<String, BTreeSet<ClientId>>,
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
            let subscribers = self.topics.get_mut(topic);
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
            if let Some(subscribers) = state.topics.get_mut(topic) {
                subscribers.remove(&id);
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

    async fn create_topic(&self, name: &str) -> StoreResult<()> {
        let mut state = self.state.write();
        if state.topics.contains_key(name) {
            return Err(StoreError::TopicExists(name.to_owned()));
        }
        state.topics.insert(name.to_owned(), BTreeSet::new());
        Ok(())
    }

    async fn delete_topic(&self, name: &str) -> StoreResult<Vec<ClientId>> {
        let mut state = self.state.write();
        let subscribers =
            state.topics.remove(name).ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))?;
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
            .map(|(name, subscribers)| TopicInfo {
                name: name.clone(),
                subscribers: subscribers.len() as u64,
            })
            .collect())
    }

    async fn subscriber_count(&self, topic: &str) -> StoreResult<u64> {
        let state = self.state.read();
        let subscribers =
            state.topics.get(topic).ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        Ok(subscribers.len() as u64)
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
