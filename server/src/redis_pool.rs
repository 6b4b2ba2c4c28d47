//! The connections a cluster member holds to Redis: a bb8 pool of multiplexed connections for
//! commands (shared by the Redis store and bus), and dedicated pub/sub connections on demand.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bb8::{ErrorSink, ManageConnection, Pool, RunError};
use bb8_redis::RedisConnectionManager;
use parking_lot::Mutex;
use redis::{
    Client, Cmd, FromRedisValue, RedisError, ScriptInvocation,
    aio::{MultiplexedConnection, PubSub},
};
use tokio::time::Instant;

use crate::metrics::RedisMetrics;

/// Pooled connections: each is multiplexed, so a few carry every concurrent request.
const POOL_SIZE: u32 = 8;
/// How long a request waits for a pooled connection before answering 503 (Redis down).
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long opening a pub/sub connection may take.
const PUBSUB_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why Redis could not serve a request; the text says what failed, for the 503 body and logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisUnavailable(pub String);

impl From<RedisError> for RedisUnavailable {
    fn from(err: RedisError) -> Self {
        RedisUnavailable(err.to_string())
    }
}

/// A pooled connection: whether a command on it failed in a way that leaves it unusable, and
/// the pool epoch it was opened in.
pub struct Tracked {
    conn: MultiplexedConnection,
    broken: bool,
    epoch: u64,
}

/// bb8-redis's manager, plus dropping connections seen broken: a multiplexed connection never
/// recovers once its socket died (Redis restarted), and testing each checkout with a PING would
/// double the commands per request. Connections from before the current epoch are discarded
/// at checkout (see [`RedisPool::discard_connections`]).
struct Manager {
    redis: RedisConnectionManager,
    epoch: Arc<AtomicU64>,
}

impl ManageConnection for Manager {
    type Connection = Tracked;
    type Error = RedisError;

    async fn connect(&self) -> Result<Tracked, RedisError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        Ok(Tracked { conn: self.redis.connect().await?, broken: false, epoch })
    }

    async fn is_valid(&self, conn: &mut Tracked) -> Result<(), RedisError> {
        self.redis.is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut Tracked) -> bool {
        conn.broken
    }
}

/// Keeps the last connect failure, so a checkout that times out can say why.
#[derive(Debug, Clone, Default)]
struct LastError(Arc<Mutex<Option<String>>>);

impl ErrorSink<RedisError> for LastError {
    fn sink(&self, error: RedisError) {
        tracing::debug!(%error, "redis connection failed");
        *self.0.lock() = Some(error.to_string());
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// The command pool and the client that opens pub/sub connections. Cheap to clone.
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool<Manager>,
    client: Client,
    last_error: LastError,
    epoch: Arc<AtomicU64>,
    metrics: RedisMetrics,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool").field("server", &self.server()).finish()
    }
}

impl RedisPool {
    /// Parses `url` and prepares the pool; connects lazily, so a node starts while Redis is down.
    pub fn new(url: &str) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let last_error = LastError::default();
        let epoch = Arc::new(AtomicU64::new(0));
        let manager = Manager { redis: RedisConnectionManager::new(url)?, epoch: epoch.clone() };
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .test_on_check_out(false)
            .connection_timeout(CHECKOUT_TIMEOUT)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        Ok(RedisPool { pool, client, last_error, epoch, metrics: RedisMetrics::default() })
    }

    /// The pool, counting its commands into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: RedisMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Makes every open command connection count as broken: each is dropped at its next
    /// checkout instead of failing a request. For when Redis went away (it may come back).
    pub fn discard_connections(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The server's address, without credentials (for logs).
    pub fn server(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisUnavailable> {
        self.run(async |conn| cmd.query_async(conn).await).await
    }

    /// Runs a Lua script (EVALSHA, loading it first where Redis does not know it yet).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, RedisUnavailable> {
        self.run(async |conn| script.invoke_async(conn).await).await
    }

    /// Runs `command` on a pooled connection, timed and counted in the metrics.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    ) -> Result<T, RedisUnavailable> {
        let started = Instant::now();
        let result = match self.checkout().await {
            Ok(mut conn) => {
                let result = command(&mut conn.conn).await;
                self.settle(&mut conn, result)
            }
            Err(err) => Err(err),
        };
        self.metrics.command(started.elapsed(), result.is_err());
        result
    }

    /// Opens a dedicated pub/sub connection (pooled connections cannot SUBSCRIBE).
    pub async fn pubsub(&self) -> Result<PubSub, RedisUnavailable> {
        match tokio::time::timeout(PUBSUB_CONNECT_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisUnavailable("timed out opening a pub/sub connection".into())),
        }
    }

    async fn checkout(&self) -> Result<bb8::PooledConnection<'_, Manager>, RedisUnavailable> {
        // Bounded: each pass drops one connection from an old epoch; new ones are current.
        for _ in 0..=POOL_SIZE {
            let mut conn = self.get().await?;
            if conn.epoch >= self.epoch.load(Ordering::Acquire) {
                return Ok(conn);
            }
            conn.broken = true;
        }
        self.get().await
    }

    async fn get(&self) -> Result<bb8::PooledConnection<'_, Manager>, RedisUnavailable> {
        self.pool.get().await.map_err(|err| match err {
            RunError::User(err) => err.into(),
            RunError::TimedOut => {
                let last = self.last_error.0.lock().clone();
                RedisUnavailable(match last {
                    Some(last) => format!("no connection to {} ({last})", self.server()),
                    None => {
                        format!("no connection to {} within {CHECKOUT_TIMEOUT:?}", self.server())
                    }
                })
            }
        })
    }

    /// When the failure means the socket is gone or stuck, drops the connection and the others
    /// opened before it: they most likely went the same way.
    fn settle<T>(
        &self,
        conn: &mut Tracked,
        result: Result<T, RedisError>,
    ) -> Result<T, RedisUnavailable> {
        result.map_err(|err| {
            if err.is_io_error()
                || err.is_connection_dropped()
                || err.is_timeout()
                || err.is_unrecoverable_error()
            {
                conn.broken = true;
                self.discard_connections();
            }
            err.into()
        })
    }
}
