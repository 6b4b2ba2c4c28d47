//! The Redis store: the records every node of a cluster shares, under one key prefix.
//!
//! Keys (`P` is the prefix): `P clients` hash id -> name; `P names` hash name -> id;
//! `P topics` set of topic names; `P topic:<name>` set of subscriber ids; `P meta:<name>` hash of
//! the topic's epoch, last offset and history settings; `P history:<name>` stream of its kept
//! messages, each with the id `<ms>-<offset>`; `P idem:<name>:<key>` a publish's idempotency
//! key (expiring with its window) with its first answer; `P nodes` sorted set of the nodes that count
//! sockets, scored by when their last heartbeat runs out, `P conns:<node>` hash client id ->
//! its live sockets on that node; `P subs:<id>` set of
//! the client's topics; `P relay:<id>` the relay peer waiting with that id. Each change that touches several keys is one Lua script, so it is
//! atomic: two nodes racing for one name both run `HSETNX`, and exactly one wins. The scripts
//! derive some keys from the prefix, so they need a single Redis server, not Redis Cluster.

use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, cmd};
use uuid::Uuid;

use super::{
    Client, ClientId, FORGET_SILENT_NODES, HistoryEntry, HistoryPage, HistorySettings, NewMessage,
    PeerAddr, Position, Present, Published, Store, StoreError, StoreResult, TopicInfo,
    generated_name, new_epoch,
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

/// Creates a topic with a new epoch (KEYS: topics, meta, history; ARGV: topic, epoch, size,
/// ttl ms). 1: created, 0: it exists.
const CREATE_TOPIC: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'size', ARGV[3], 'ttl', ARGV[4], 'last', 0, 'ms', 0)
return 1
";

/// Gives a message to a topic (KEYS: topics, subscribers, meta, history, idempotency key;
/// ARGV: topic, has sender (0/1), sender, data, then epoch, size and ttl ms for a topic made
/// before histories, then has idempotency key (0/1), its window ms): the next offset, appended
/// to the history with the trims by size and age, and the subscriber count, atomically. A key
/// seen within its window (in this epoch) publishes nothing and answers as the first time.
/// Returns {subscribers, offset, epoch, duplicate (0/1)}, or nil without the topic.
const PUBLISH: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return false end
if redis.call('HSETNX', KEYS[3], 'epoch', ARGV[5]) == 1 then
  redis.call('HSET', KEYS[3], 'size', ARGV[6], 'ttl', ARGV[7])
end
local meta = redis.call('HMGET', KEYS[3], 'epoch', 'size', 'ttl', 'ms')
local epoch = meta[1]
if ARGV[8] == '1' then
  local first = redis.call('GET', KEYS[5])
  if first then
    local first_epoch, offset, subscribers = string.match(first, '^(%S+) (%d+) (%d+)$')
    if first_epoch == epoch then return {tonumber(subscribers), tonumber(offset), epoch, 1} end
  end
end
local size, ttl, last_ms = tonumber(meta[2]) or 0, tonumber(meta[3]) or 0, tonumber(meta[4]) or 0
local offset = redis.call('HINCRBY', KEYS[3], 'last', 1)
if size > 0 and ttl > 0 then
  local time = redis.call('TIME')
  -- Ids must grow: a clock that stepped back reuses the last millisecond.
  local ms = math.max(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000), last_ms)
  redis.call('HSET', KEYS[3], 'ms', ms)
  local id = string.format('%d-%d', ms, offset)
  if ARGV[2] == '1' then
    redis.call('XADD', KEYS[4], 'MAXLEN', size, id, 'from', ARGV[3], 'data', ARGV[4])
  else
    redis.call('XADD', KEYS[4], 'MAXLEN', size, id, 'data', ARGV[4])
  end
  redis.call('XTRIM', KEYS[4], 'MINID', string.format('%d-0', ms - ttl))
end
local subscribers = redis.call('SCARD', KEYS[2])
if ARGV[8] == '1' then
  redis.call('SET', KEYS[5], epoch .. ' ' .. offset .. ' ' .. subscribers, 'PX', ARGV[9])
end
return {subscribers, offset, epoch, 0}
";

/// A topic's kept messages after an offset (KEYS: topics, meta, history; ARGV: topic, since,
/// limit, then epoch, size and ttl ms for a topic made before histories). Returns {last offset,
/// epoch, oldest kept offset, {offset, has sender, sender, data}...}, or nil without the topic.
const HISTORY: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return false end
if redis.call('HSETNX', KEYS[2], 'epoch', ARGV[4]) == 1 then
  redis.call('HSET', KEYS[2], 'size', ARGV[5], 'ttl', ARGV[6])
end
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'last', 'ttl')
local last, ttl = tonumber(meta[2]) or 0, tonumber(meta[3]) or 0
local since, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local oldest = last + 1
local messages = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
  local ms, offset = string.match(entry[1], '(%d+)-(%d+)')
  ms, offset = tonumber(ms), tonumber(offset)
  -- Trimmed by age at each publish; what aged since is left out here.
  if now - ms <= ttl then
    if offset < oldest then oldest = offset end
    if offset > since and #messages < limit then
      local fields = {}
      for i = 1, #entry[2], 2 do fields[entry[2][i]] = entry[2][i + 1] end
      local has_from = fields['from'] and '1' or '0'
      table.insert(messages, {offset, has_from, fields['from'] or '', fields['data'] or 'null'})
    end
  end
end
return {last, meta[1], oldest, messages}
";

/// Deletes a topic and every subscription to it (KEYS: topics, meta, history; ARGV: prefix,
/// topic). Returns the subscribers, or nil when the topic does not exist.
const DELETE_TOPIC: &str = r"
if redis.call('SREM', KEYS[1], ARGV[2]) == 0 then return false end
redis.call('DEL', KEYS[2], KEYS[3])
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

/// Counts a client's sockets on a node (KEYS: the node's conns; ARGV: client, delta); a count
/// that reaches zero is removed.
const SOCKETS_CHANGED: &str = r"
if redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
";

/// The clients subscribed to a topic with sockets on live nodes (KEYS: topics, the topic's
/// subscribers, nodes, clients; ARGV: prefix, topic, forget-after ms). A node is alive until
/// its score in `nodes` (the time its last heartbeat runs out); one silent for longer than
/// forget-after is forgotten with its counts. Returns {id, name, connections}..., or nil
/// without the topic.
const PRESENCE: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then return false end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[3]))) do
  redis.call('DEL', ARGV[1] .. 'conns:' .. node)
  redis.call('ZREM', KEYS[3], node)
end
local live = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')) do
  table.insert(live, ARGV[1] .. 'conns:' .. node)
end
local present = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local connections = 0
  for _, conns in ipairs(live) do
    connections = connections + (tonumber(redis.call('HGET', conns, id)) or 0)
  end
  if connections > 0 then
    local name = redis.call('HGET', KEYS[4], id)
    if name then table.insert(present, {id, name, connections}) end
  end
end
return present
";

/// A node's heartbeat (KEYS: nodes; ARGV: node, ttl ms): alive until now + ttl.
const NODE_ALIVE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
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
    create_topic: Script,
    publish: Script,
    history: Script,
    delete_topic: Script,
    change_subscriptions: Script,
    subscriptions: Script,
    topics: Script,
    subscriber_count: Script,
    relay_meet: Script,
    relay_leave: Script,
    sockets_changed: Script,
    presence: Script,
    node_alive: Script,
}

/// Registrations, names, topics and subscriptions in Redis, shared by every node on it.
pub struct RedisStore {
    pool: RedisPool,
    prefix: String,
    clients: String,
    names: String,
    topics: String,
    scripts: Scripts,
    /// The history of a topic made before topics had one (by an older node).
    default_history: HistorySettings,
    /// The epoch such a topic gets: drawn once, not at every publish that might need it (one
    /// topic's epochs differ by life, and a topic made again gets a new one at creation).
    legacy_epoch: String,
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
                create_topic: Script::new(CREATE_TOPIC),
                publish: Script::new(PUBLISH),
                history: Script::new(HISTORY),
                delete_topic: Script::new(DELETE_TOPIC),
                change_subscriptions: Script::new(CHANGE_SUBSCRIPTIONS),
                subscriptions: Script::new(SUBSCRIPTIONS),
                topics: Script::new(TOPICS),
                subscriber_count: Script::new(SUBSCRIBER_COUNT),
                relay_meet: Script::new(RELAY_MEET),
                relay_leave: Script::new(RELAY_LEAVE),
                sockets_changed: Script::new(SOCKETS_CHANGED),
                presence: Script::new(PRESENCE),
                node_alive: Script::new(NODE_ALIVE),
            },
            default_history: HistorySettings::default(),
            legacy_epoch: new_epoch(),
        }
    }

    /// The history a topic made before topics had one gets when first used.
    pub fn with_default_history(mut self, history: HistorySettings) -> Self {
        self.default_history = history;
        self
    }

    fn nodes_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    /// The ARGV tail of the scripts that give an older topic its history: epoch, size, ttl ms.
    fn default_history_args(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        let history = self.default_history;
        invocation.arg(&self.legacy_epoch).arg(history.size).arg(history.ttl.as_millis() as u64);
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

    async fn create_topic(&self, name: &str, history: HistorySettings) -> StoreResult<()> {
        let mut invocation = self.scripts.create_topic.key(&self.topics);
        invocation.key(self.key("meta", name)).key(self.key("history", name));
        invocation.arg(name).arg(new_epoch()).arg(history.size);
        invocation.arg(history.ttl.as_millis() as u64);
        let created: bool = self.pool.invoke(&invocation).await?;
        if !created {
            return Err(StoreError::TopicExists(name.to_owned()));
        }
        Ok(())
    }

    async fn delete_topic(&self, name: &str) -> StoreResult<Vec<ClientId>> {
        let mut invocation = self.scripts.delete_topic.key(&self.topics);
        invocation.key(self.key("meta", name)).key(self.key("history", name));
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

    async fn publish(&self, topic: &str, message: NewMessage<'_>) -> StoreResult<Published> {
        let NewMessage { from, data, idempotency } = message;
        let mut invocation = self.scripts.publish.key(&self.topics);
        invocation.key(self.key("topic", topic));
        invocation.key(self.key("meta", topic)).key(self.key("history", topic));
        let key = idempotency.map_or("", |idempotency| idempotency.key);
        invocation.key(format!("{}idem:{topic}:{key}", self.prefix));
        invocation.arg(topic).arg(if from.is_some() { "1" } else { "0" });
        invocation.arg(from.unwrap_or_default()).arg(data);
        self.default_history_args(&mut invocation);
        match idempotency {
            Some(idempotency) => {
                invocation.arg("1").arg(idempotency.window.as_millis().max(1) as u64)
            }
            None => invocation.arg("0").arg(0),
        };
        let answer: Option<(u64, u64, String, u8)> = self.pool.invoke(&invocation).await?;
        let (subscribers, offset, epoch, duplicate) =
            answer.ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        let position = Position { offset, epoch };
        Ok(Published { subscribers, position, duplicate: duplicate == 1 })
    }

    async fn history(&self, topic: &str, since: u64, limit: usize) -> StoreResult<HistoryPage> {
        let mut invocation = self.scripts.history.key(&self.topics);
        invocation.key(self.key("meta", topic)).key(self.key("history", topic));
        invocation.arg(topic).arg(since).arg(limit);
        self.default_history_args(&mut invocation);
        type Entry = (u64, String, String, String);
        let answer: Option<(u64, String, u64, Vec<Entry>)> = self.pool.invoke(&invocation).await?;
        let (last, epoch, oldest, entries) =
            answer.ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        let messages = entries
            .into_iter()
            .map(|(offset, has_from, from, data)| HistoryEntry {
                offset,
                from: (has_from == "1").then_some(from),
                data,
            })
            .collect();
        Ok(HistoryPage { position: Position { offset: last, epoch }, oldest, messages })
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

    async fn sockets_changed(&self, node: Uuid, client: ClientId, delta: i64) -> StoreResult<()> {
        let mut invocation = self.scripts.sockets_changed.key(self.key("conns", &node.to_string()));
        invocation.arg(client.to_string()).arg(delta);
        let _: u8 = self.pool.invoke(&invocation).await?;
        Ok(())
    }

    async fn presence(&self, topic: &str) -> StoreResult<Vec<Present>> {
        let mut invocation = self.scripts.presence.key(&self.topics);
        invocation.key(self.key("topic", topic)).key(self.nodes_key()).key(&self.clients);
        invocation.arg(&self.prefix).arg(topic).arg(FORGET_SILENT_NODES.as_millis() as u64);
        let answer: Option<Vec<(String, String, u64)>> = self.pool.invoke(&invocation).await?;
        let answer = answer.ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        let mut present: Vec<Present> = answer
            .into_iter()
            .filter_map(|(id, name, connections)| {
                Some(Present { client: Uuid::parse_str(&id).ok()?, name, connections })
            })
            .collect();
        present.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(present)
    }

    async fn node_alive(&self, node: Uuid, ttl: Duration) -> StoreResult<()> {
        let mut invocation = self.scripts.node_alive.key(self.nodes_key());
        invocation.arg(node.to_string()).arg(ttl.as_millis() as u64);
        let _: u8 = self.pool.invoke(&invocation).await?;
        Ok(())
    }

    async fn node_gone(&self, node: Uuid) -> StoreResult<()> {
        let node = node.to_string();
        let _: u64 = self.pool.query(cmd("ZREM").arg(self.nodes_key()).arg(&node)).await?;
        let _: u64 = self.pool.query(cmd("DEL").arg(self.key("conns", &node))).await?;
        Ok(())
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
