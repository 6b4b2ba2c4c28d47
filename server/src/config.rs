//! Command-line and environment configuration (clap), validated once at start.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// Switchboard: real-time messaging over a typed HTTP API and WebSockets.
///
/// Every option can also be set with the environment variable shown next to it.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "SWITCHBOARD_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Public base URL of this service (e.g. https://push.example.com), used to build `ws_url`.
    /// Default: derived from the request's Host header.
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// API key accepted in the X-Api-Key header (repeatable; comma-separated in the env var).
    /// If none is given, one is generated at start and logged once.
    #[arg(long = "api-key", env = "SWITCHBOARD_API_KEY", value_delimiter = ',')]
    pub api_keys: Vec<String>,

    /// Topic that exists at start (repeatable; comma-separated in the env var).
    #[arg(long = "topic", env = "SWITCHBOARD_TOPIC", value_delimiter = ',')]
    pub topics: Vec<String>,

    /// Origin allowed for browsers, HTTP and WebSocket (repeatable; comma-separated in the env
    /// var). None given: every origin is allowed.
    #[arg(long = "cors-origin", env = "SWITCHBOARD_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Largest message accepted, in bytes: the JSON `message` of an HTTP publish or broadcast
    /// (413 above it) and a whole WebSocket frame from a client (close 1009 above it).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(64..=(64 << 20)))]
    pub max_message_bytes: u32,

    /// Messages each topic keeps for clients that reconnect (and `GET /topics/{name}/history`);
    /// 0 keeps none. `createTopic` may set its own.
    #[arg(long, env = "SWITCHBOARD_HISTORY_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub history_size: u32,

    /// How long a topic keeps a message; 0 keeps none. Accepts e.g. 5m, 30s, 1h.
    #[arg(long, env = "SWITCHBOARD_HISTORY_TTL", default_value = "5m", value_parser = parse_ttl)]
    pub history_ttl: Duration,

    /// How long a topic remembers a publish's `idempotency_key`: the same key again within it
    /// publishes nothing and gets the first answer. 0 turns keys off.
    #[arg(long, env = "SWITCHBOARD_IDEMPOTENCY_WINDOW", default_value = "2m", value_parser = parse_ttl)]
    pub idempotency_window: Duration,

    /// Sockets (client WebSockets and relay peers) this node holds at most; past it a handshake
    /// answers 503 and nothing else is disturbed. 0: the open-file limit less 256 kept for HTTP,
    /// Redis and files.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: u32,

    /// Frames that may wait for one slow connection before it is closed with 4008.
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub send_queue: u32,

    /// How often the server pings each WebSocket; a client that has not answered by the next
    /// ping is closed with 4002. Accepts e.g. 30s, 500ms, 1m.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value = "30s", value_parser = parse_interval)]
    pub ping_interval: Duration,

    /// How long shutdown waits for connections to close after sending them 1001.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_interval)]
    pub shutdown_timeout: Duration,

    /// Log line format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Redis URL (redis://[:password@]host:port[/db]): the node keeps its records in Redis and
    /// joins every other node on it, as one service. Without it: the in-memory store, one node.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and pub/sub channel; nodes with the same Redis and prefix form
    /// one cluster.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "switchboard:")]
    pub redis_prefix: String,

    /// TLS certificate chain (PEM file). With --tls-key, the port serves HTTPS and wss://.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM file: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mount every route under this path (e.g. /switchboard): the API, /ws, /relay, the docs,
    /// the spec and the test page. Default: at the root.
    #[arg(long, env = "SWITCHBOARD_PATH_PREFIX", default_value = "", value_parser = parse_path_prefix)]
    pub path_prefix: String,

    /// Key a relay peer must give as `?key=` (repeatable; comma-separated in the env var).
    /// None given: the relay is open to anyone who knows an id.
    #[arg(long = "relay-key", env = "SWITCHBOARD_RELAY_KEY", value_delimiter = ',')]
    pub relay_keys: Vec<String>,

    /// Turn relay mode off: /relay/{id} answers 404.
    #[arg(long, env = "SWITCHBOARD_NO_RELAY")]
    pub no_relay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = if text == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(text).map_err(|e| e.to_string())?
    };
    if ttl > Duration::from_secs(7 * 24 * 3600) {
        return Err("must be at most a week".into());
    }
    Ok(ttl)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(duration)
}

/// `/x/y` stays `/x/y`, `/x/` becomes `/x`, `/` and the empty string mean the root (empty).
fn parse_path_prefix(text: &str) -> Result<String, String> {
    let prefix = text.trim_end_matches('/');
    let segment_ok = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    if prefix.is_empty() {
        return Ok(String::new());
    }
    match prefix.strip_prefix('/') {
        Some(rest) if rest.split('/').all(segment_ok) => Ok(prefix.to_owned()),
        _ => Err("must look like /name or /a/b (segments of A-Za-z0-9-._~)".into()),
    }
}

impl Config {
    /// A configuration with every default, bound to an ephemeral loopback port (for tests and
    /// embedding).
    pub fn ephemeral() -> Self {
        Config::parse_from(["switchboard", "--bind", "127.0.0.1:0"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_repeatable_flags() {
        let config = Config::parse_from([
            "switchboard",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--topic",
            "news",
            "--ping-interval",
            "250ms",
        ]);
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.api_keys, ["a", "b"]);
        assert_eq!(config.topics, ["news"]);
        assert_eq!(config.max_message_bytes, 65536);
        assert_eq!((config.history_size, config.history_ttl), (100, Duration::from_secs(300)));
        assert_eq!(config.idempotency_window, Duration::from_secs(120));
        assert_eq!(config.ping_interval, Duration::from_millis(250));
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn help_lists_every_option_with_its_env_var() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for var in [
            "BIND",
            "PUBLIC_URL",
            "API_KEY",
            "TOPIC",
            "CORS_ORIGIN",
            "MAX_MESSAGE_BYTES",
            "SEND_QUEUE",
            "PING_INTERVAL",
            "SHUTDOWN_TIMEOUT",
            "LOG_FORMAT",
            "REDIS_URL",
            "REDIS_PREFIX",
            "TLS_CERT",
            "TLS_KEY",
            "PATH_PREFIX",
            "RELAY_KEY",
            "NO_RELAY",
        ] {
            assert!(help.contains(&format!("SWITCHBOARD_{var}")), "--help names SWITCHBOARD_{var}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::try_parse_from(["switchboard", "--ping-interval", "soon"]).is_err());
        assert!(Config::try_parse_from(["switchboard", "--send-queue", "0"]).is_err());
        assert!(Config::try_parse_from(["switchboard", "--log-format", "xml"]).is_err());
        assert!(Config::try_parse_from(["switchboard", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["switchboard", "--tls-key", "k.pem"]).is_err());
        for bad in ["x", "/a b", "/a//b", "/../x", "/a?b"] {
            assert!(
                Config::try_parse_from(["switchboard", "--path-prefix", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_prefixes_are_normalized() {
        for (given, kept) in
            [("", ""), ("/", ""), ("/x", "/x"), ("/x/", "/x"), ("/a/b-c", "/a/b-c")]
        {
            let config = Config::parse_from(["switchboard", "--path-prefix", given]);
            assert_eq!(config.path_prefix, kept, "{given}");
        }
    }

    #[test]
    fn help_shows_defaults_and_version_is_the_crate_version() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for default in ["[default: 127.0.0.1:8080]", "[default: switchboard:]", "[default: 30s]"] {
            assert!(help.contains(default), "--help shows {default}");
        }
        let version = Config::command().render_version();
        assert_eq!(version.trim(), format!("switchboard {}", env!("CARGO_PKG_VERSION")));
    }
}
