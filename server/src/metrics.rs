//! What `GET /metrics` exposes, in the Prometheus text format (prometheus-client, one registry
//! per node): events counted where they happen (publishes, closes, HTTP requests, Redis
//! commands), and the node's state read at each scrape (sockets, clients, topics, deliveries).
//! Nothing here is counted per recipient of a delivery: the fan-out counts once per publish.

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The node's state as of the scrape being answered; the registry's collector reads it.
    state: Arc<Mutex<State>>,
    /// One scrape at a time: each answers with the state it set.
    scrape: Mutex<()>,
    published_to_topics: Counter,
    published_to_everyone: Counter,
    closes: Family<CloseLabels, Counter>,
    http_requests: Family<RequestLabels, Counter>,
    http_durations: Family<OperationLabel, Histogram, fn() -> Histogram>,
    redis: RedisMetrics,
}

/// The node's state, read at each scrape.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub connections: u64,
    pub connected_clients: u64,
    /// None while the store cannot be read.
    pub registered_clients: Option<u64>,
    pub topics: Option<u64>,
    pub deliveries: u64,
    pub slow_consumer_closes: u64,
    pub relay_peers: u64,
    pub relayed_frames: u64,
    /// Whether the cluster bus is connected, and how often it reconnected (cluster members).
    pub bus: Option<(bool, u64)>,
}

/// Who closed a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClosedBy {
    Server,
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CloseLabels {
    code: u16,
    by: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What the Redis connections count: failed commands and how long commands take. Cheap to
/// clone (the counts are shared).
#[derive(Debug, Clone)]
pub struct RedisMetrics {
    errors: Counter,
    durations: Histogram,
}

impl Default for RedisMetrics {
    fn default() -> Self {
        RedisMetrics { errors: Counter::default(), durations: latency_histogram() }
    }
}

impl RedisMetrics {
    /// One command took `took`; `failed` if Redis did not answer it.
    pub fn command(&self, took: Duration, failed: bool) {
        self.durations.observe(took.as_secs_f64());
        if failed {
            self.errors.inc();
        }
    }
}

/// Seconds from 100 µs to ~3.3 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchboard");
        let published = Family::<KindLabel, Counter>::default();
        registry.register("messages_published", "Messages published, by kind", published.clone());
        let closes = Family::<CloseLabels, Counter>::default();
        registry.register(
            "websocket_closes",
            "WebSocket connections and relay peers closed, by close code and by who closed",
            closes.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by operation (its operationId) and status",
            http_requests.clone(),
        );
        let http_durations: Family<OperationLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "How long HTTP requests took to answer, by operation",
            http_durations.clone(),
        );
        let redis = RedisMetrics::default();
        registry.register(
            "redis_command_errors",
            "Redis commands that failed (Redis unreachable or erring)",
            redis.errors.clone(),
        );
        registry.register(
            "redis_command_duration_seconds",
            "How long Redis commands took",
            redis.durations.clone(),
        );
        let state = Arc::new(Mutex::new(State::default()));
        registry.register_collector(Box::new(StateCollector(state.clone())));
        // One statement each: the family's guard must be gone before the next insert.
        let published_to_topics = published.get_or_create(&KindLabel { kind: "topic" }).clone();
        let published_to_everyone =
            published.get_or_create(&KindLabel { kind: "broadcast" }).clone();
        Metrics {
            registry,
            state,
            scrape: Mutex::new(()),
            published_to_topics,
            published_to_everyone,
            closes,
            http_requests,
            http_durations,
            redis,
        }
    }

    /// A message was published to a topic (or, `broadcast`, to everyone).
    pub fn published(&self, broadcast: bool) {
        match broadcast {
            true => self.published_to_everyone.inc(),
            false => self.published_to_topics.inc(),
        };
    }

    /// A WebSocket closed with `code`.
    pub fn closed(&self, code: u16, by: ClosedBy) {
        let by = match by {
            ClosedBy::Server => "server",
            ClosedBy::Client => "client",
        };
        self.closes.get_or_create(&CloseLabels { code, by }).inc();
    }

    /// An HTTP request of `operation` was answered with `status` after `took`.
    pub fn request(&self, operation: &'static str, status: u16, took: Duration) {
        self.http_requests.get_or_create(&RequestLabels { operation, status }).inc();
        let durations = self.http_durations.get_or_create(&OperationLabel { operation });
        durations.observe(took.as_secs_f64());
    }

    /// What the node's Redis connections count into.
    pub fn redis(&self) -> RedisMetrics {
        self.redis.clone()
    }

    /// The metrics in the Prometheus text format, with the node's `state` now.
    pub fn render(&self, state: State) -> String {
        let _one_at_a_time = self.scrape.lock();
        *self.state.lock() = state;
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// Encodes the state set for the scrape being answered.
#[derive(Debug)]
struct StateCollector(Arc<Mutex<State>>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.0.lock().clone();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
        };
        gauge(
            "connections",
            "Live WebSocket connections of clients on this node.",
            state.connections,
        )?;
        gauge(
            "connected_clients",
            "Clients with at least one live connection on this node.",
            state.connected_clients,
        )?;
        if let Some(clients) = state.registered_clients {
            gauge("registered_clients", "Registered clients, on every node.", clients)?;
        }
        if let Some(topics) = state.topics {
            gauge("topics", "Topics, on every node.", topics)?;
        }
        gauge("relay_peers", "Relay peers on this node, waiting or paired.", state.relay_peers)?;
        if let Some((connected, _)) = state.bus {
            gauge("bus_connected", "1 while the cluster bus is connected.", u64::from(connected))?;
        }
        let mut counter = |name: &str, help: &str, value: u64| {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
        };
        counter("deliveries", "Frames handed to sockets on this node.", state.deliveries)?;
        counter(
            "slow_consumer_closes",
            "Sockets closed (4008) for not keeping up.",
            state.slow_consumer_closes,
        )?;
        counter("relay_frames", "Frames relay peers on this node sent.", state.relayed_frames)?;
        if let Some((_, reconnects)) = state.bus {
            counter(
                "bus_reconnects",
                "Times the cluster bus connection was made again.",
                reconnects,
            )?;
        }
        Ok(())
    }
}
