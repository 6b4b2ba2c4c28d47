//! The Redis store: the records every node of a cluster shares, under one key prefix.
//!
//! Keys (`P` is the prefix): `P clients` hash id -> name; `P names` hash name -> id;
//! `P topics` set of topic names; `P topic:<name>` set of subscriber ids; `P subs:<id>` set of
//! the client's topics; `P relay:<id>` the relay peer waiting with that id. Each change that touches several keys is one Lua script, so it is
//! atomic: two nodes racing for one name both run `HSETNX`, and exactly one wins. The scripts
//! derive some keys from the prefix, so they need a single Redis server, not Redis Cluster.

use async_trait::async_trait;
use redis::{Script, cmd};
use uuid::Uuid;

use super::{
    Client, ClientId, PeerAddr, Store, StoreError, StoreResult, TopicInfo, generated_name,
};
use crate::redis_pool::{RedisPool, RedisUnavailable};

/// Reserves the name (KEYS: names, clients; ARGV: id, name). 1: registered, 0: name taken.
const REGISTER: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
";

/// Removes a client, its name and subscriptions (KEYS: clients, names; ARGV: prefix, id).
/// Returns the name, or nil for an unknown client.
const UNREGISTER: &str = r"
local name = redis.call('HGET', KEYS[1], ARGV[2])
if not name then return false end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], name)
local subs = ARGV[1] .. 'subs:' .. ARGV[2]
for _, topic in ipairs(redis.call('SMEMBERS', subs)) do
  redis.call('SREM', ARGV[1] .. 'topic:' .. topic, ARGV[2])
end
redis.call('DEL', subs)
return name
";

/// Deletes a topic and every subscription to it (KEYS: topics; ARGV: prefix, topic). Returns
/// the subscribers, or nil when the topic does not exist.
const DELETE_TOPIC: &str = r"
if redis.call('SREM', KEYS[1], ARGV[2]) == 0 then return false end
local key = ARGV[1] .. 'topic:' .. ARGV[2]
local subscribers = redis.call('SMEMBERS', key)
for _, id in ipairs(subscribers) do
  redis.call('SREM', ARGV[1] .. 'subs:' .. id, ARGV[2])
end
redis.call('DEL', key)
return subscribers
";

/// Subscribes or unsubscribes a client to every topic or to none (KEYS: clients, topics; ARGV:
/// prefix, id, SADD or SREM, topics...). Returns {'ok'}, {'unknown_client'} or
/// {'topic_not_found', topic}.
const CHANGE_SUBSCRIPTIONS: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return {'unknown_client'} end
for i = 4, #ARGV do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then return {'topic_not_found', ARGV[i]} end
end
for i = 4, #ARGV do
  redis.call(ARGV[3], ARGV[1] .. 'topic:' .. ARGV[i], ARGV[2])
  redis.call(ARGV[3], ARGV[1] .. 'subs:' .. ARGV[2], ARGV[i])
end
return {'ok'}
";

/// A client's topics (KEYS: clients; ARGV: prefix, id), or nil for an unknown client.
const SUBSCRIPTIONS: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return false end
return redis.call('SMEMBERS', ARGV[1] .. 'subs:' .. ARGV[2])
";

/// Every topic and its subscriber count as two lists (KEYS: topics; ARGV: prefix).
const TOPICS: &str = r"
local names = redis.call('SMEMBERS', KEYS[1])
local counts = {}
for i, name in ipairs(names) do counts[i] = redis.call('SCARD', ARGV[1] .. 'topic:' .. name) end
return {names, counts}
";

/// A topic's subscriber count (KEYS: topics; ARGV: prefix, topic), or nil if it does not exist.
const SUBSCRIBER_COUNT: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then return false end
return redis.call('SCARD', ARGV[1] .. 'topic:' .. ARGV[2])
";

/// Relay rendezvous (KEYS: the id's waiting key; ARGV: me). Returns the waiting peer it took,
/// or nil when `me` waits now (or already did).
const RELAY_MEET: &str = r"
local waiting = redis.call('GET', KEYS[1])
if waiting == ARGV[1] then return false end
if waiting then
  redis.call('DEL', KEYS[1])
  return waiting
end
redis.call('SET', KEYS[1], ARGV[1])
return false
";

/// Stops waiting (KEYS: the id's waiting key; ARGV: me). 1 if `me` was the one waiting.
const RELAY_LEAVE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

struct Scripts {
    register: Script,
    unregister: Script,
    delete_topic: Script,
    change_subscriptions: Script,
    subscriptions: Script,
    topics: Script,
    subscriber_count: Script,
    relay_meet: Script,
    relay_leave: Script,
}

/// Registrations, names, topics and subscriptions in Redis, shared by every node on it.
pub struct RedisStore {
    pool: RedisPool,
    prefix: String,
    clients: String,
    names: String,
    topics: String,
    scripts: Scripts,
}

impl From<RedisUnavailable> for StoreError {
    fn from(err: RedisUnavailable) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

impl RedisStore {
    /// A store on `pool` with every key under `prefix`.
    pub fn new(pool: RedisPool, prefix: &str) -> Self {
        RedisStore {
            pool,
            prefix: prefix.to_owned(),
            clients: format!("{prefix}clients"),
            names: format!("{prefix}names"),
            topics: format!("{prefix}topics"),
            scripts: Scripts {
                register: Script::new(REGISTER),
                unregister: Script::new(UNREGISTER),
                delete_topic: Script::new(DELETE_TOPIC),
                change_subscriptions: Script::new(CHANGE_SUBSCRIPTIONS),
                subscriptions: Script::new(SUBSCRIPTIONS),
                topics: Script::new(TOPICS),
                subscriber_count: Script::new(SUBSCRIBER_COUNT),
                relay_meet: Script::new(RELAY_MEET),
                relay_leave: Script::new(RELAY_LEAVE),
            },
        }
    }

    /// The key naming the peer that waits with relay `id`.
    fn relay_key(&self, id: &str) -> String {
        format!("{}relay:{id}", self.prefix)
    }

    async fn change_subscriptions(
        &self,
        id: ClientId,
        topics: &[String],
        command: &str,
    ) -> StoreResult<()> {
        let mut invocation = self.scripts.change_subscriptions.key(&self.clients);
        invocation.key(&self.topics).arg(&self.prefix).arg(id.to_string()).arg(command);
        for topic in topics {
            invocation.arg(topic);
        }
        let outcome: Vec<String> = self.pool.invoke(&invocation).await?;
        match outcome.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [unknown] if unknown == "unknown_client" => Err(StoreError::UnknownClient),
            [missing, topic] if missing == "topic_not_found" => {
                Err(StoreError::TopicNotFound(topic.clone()))
            }
            other => Err(StoreError::Unavailable(format!("redis: unexpected reply {other:?}"))),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn register(&self, name: Option<&str>) -> StoreResult<Client> {
        loop {
            let candidate = name.map_or_else(generated_name, str::to_owned);
            let id = Uuid::new_v4();
            let mut invocation = self.scripts.register.key(&self.names);
            invocation.key(&self.clients).arg(id.to_string()).arg(&candidate);
            let registered: bool = self.pool.invoke(&invocation).await?;
            match (registered, name) {
                (true, _) => return Ok(Client { id, name: candidate }),
                (false, Some(name)) => return Err(StoreError::NameTaken(name.to_owned())),
                // A generated name collided: draw another.
                (false, None) => continue,
            }
        }
    }

    async fn client(&self, id: ClientId) -> StoreResult<Client> {
        let name: Option<String> =
            self.pool.query(cmd("HGET").arg(&self.clients).arg(id.to_string())).await?;
        name.map(|name| Client { id, name }).ok_or(StoreError::UnknownClient)
    }

    async fn unregister(&self, id: ClientId) -> StoreResult<Client> {
        let mut invocation = self.scripts.unregister.key(&self.clients);
        invocation.key(&self.names).arg(&self.prefix).arg(id.to_string());
        let name: Option<String> = self.pool.invoke(&invocation).await?;
        name.map(|name| Client { id, name }).ok_or(StoreError::UnknownClient)
    }

    async fn client_count(&self) -> StoreResult<u64> {
        Ok(self.pool.query(cmd("HLEN").arg(&self.clients)).await?)
    }

    async fn topic_count(&self) -> StoreResult<u64> {
        Ok(self.pool.query(cmd("SCARD").arg(&self.topics)).await?)
    }

    async fn unknown_clients(&self, ids: &[ClientId]) -> StoreResult<Vec<ClientId>> {
        let mut unknown = Vec::new();
        // Bounded commands: one HMGET per chunk rather than one per id or one huge one.
        for chunk in ids.chunks(1000) {
            let fields: Vec<String> = chunk.iter().map(ClientId::to_string).collect();
            let names: Vec<Option<String>> =
                self.pool.query(cmd("HMGET").arg(&self.clients).arg(fields)).await?;
            unknown.extend(
                chunk.iter().zip(names).filter(|(_, name)| name.is_none()).map(|(id, _)| *id),
            );
        }
        Ok(unknown)
    }

    async fn create_topic(&self, name: &str) -> StoreResult<()> {
        let added: u64 = self.pool.query(cmd("SADD").arg(&self.topics).arg(name)).await?;
        if added == 0 {
            return Err(StoreError::TopicExists(name.to_owned()));
        }
        Ok(())
    }

    async fn delete_topic(&self, name: &str) -> StoreResult<Vec<ClientId>> {
        let mut invocation = self.scripts.delete_topic.key(&self.topics);
        invocation.arg(&self.prefix).arg(name);
        let subscribers: Option<Vec<String>> = self.pool.invoke(&invocation).await?;
        let subscribers = subscribers.ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))?;
        // Ids in the set were written by us; one that does not parse is skipped, not fatal.
        Ok(subscribers.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect())
    }

    async fn topics(&self) -> StoreResult<Vec<TopicInfo>> {
        let mut invocation = self.scripts.topics.key(&self.topics);
        invocation.arg(&self.prefix);
        let (names, counts): (Vec<String>, Vec<u64>) = self.pool.invoke(&invocation).await?;
        let mut topics: Vec<TopicInfo> = names
            .into_iter()
            .zip(counts)
            .map(|(name, subscribers)| TopicInfo { name, subscribers })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    async fn subscriber_count(&self, topic: &str) -> StoreResult<u64> {
        let mut invocation = self.scripts.subscriber_count.key(&self.topics);
        invocation.arg(&self.prefix).arg(topic);
        let count: Option<u64> = self.pool.invoke(&invocation).await?;
        count.ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))
    }

    async fn subscribe(&self, id: ClientId, topics: &[String]) -> StoreResult<()> {
        self.change_subscriptions(id, topics, "SADD").await
    }

    async fn unsubscribe(&self, id: ClientId, topics: &[String]) -> StoreResult<()> {
        self.change_subscriptions(id, topics, "SREM").await
    }

    async fn subscriptions(&self, id: ClientId) -> StoreResult<Vec<String>> {
        let mut invocation = self.scripts.subscriptions.key(&self.clients);
        invocation.arg(&self.prefix).arg(id.to_string());
        let topics: Option<Vec<String>> = self.pool.invoke(&invocation).await?;
        let mut topics = topics.ok_or(StoreError::UnknownClient)?;
        topics.sort();
        Ok(topics)
    }

    async fn relay_meet(&self, id: &str, me: PeerAddr) -> StoreResult<Option<PeerAddr>> {
        let mut invocation = self.scripts.relay_meet.key(self.relay_key(id));
        invocation.arg(me.to_string());
        let taken: Option<String> = self.pool.invoke(&invocation).await?;
        taken.map(|addr| addr.parse()).transpose()
    }

    async fn relay_leave(&self, id: &str, me: PeerAddr) -> StoreResult<bool> {
        let mut invocation = self.scripts.relay_leave.key(self.relay_key(id));
        invocation.arg(me.to_string());
        Ok(self.pool.invoke(&invocation).await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        let _: String = self.pool.query(&cmd("PING")).await?;
        Ok(())
    }
}
