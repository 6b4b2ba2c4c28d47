//! `switchboard-cli`: Switchboard from a terminal. Readable output by default, `--json` for
//! scripts; an error prints the server's message and exits non-zero.

use std::{io::Write, process::ExitCode};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::{
    ClientError, HttpClient, http_client,
    socket::{Event, Socket},
    types,
};
use switchboard_protocol::request::{socket_url, ws_url};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        Message,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "switchboard-cli", version, about = "Switchboard from a terminal")]
struct Cli {
    /// The server's HTTP address, with its path prefix if it has one.
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// An API key of the server (register, topics, stats, and sending without an id).
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print JSON (one object per line for `listen` and `relay`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register a client; prints its id (a secret) and WebSocket URL.
    Register {
        /// Its unique name; without one the server assigns one.
        name: Option<String>,
    },
    /// Unregister a client; its sockets close with 4001.
    Unregister { id: Uuid },
    /// List topics and their subscriber counts.
    Topics,
    /// Create a topic.
    CreateTopic {
        name: String,
        /// Messages it keeps for clients that catch up (default: the server's).
        #[arg(long)]
        history_size: Option<u32>,
        /// Seconds it keeps a message (default: the server's).
        #[arg(long)]
        history_ttl_seconds: Option<u64>,
    },
    /// A topic's kept messages after an offset.
    History {
        topic: String,
        /// Messages after this offset.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// The epoch the offset belongs to.
        #[arg(long)]
        epoch: Option<String>,
        #[arg(long)]
        limit: Option<std::num::NonZeroU32>,
    },
    /// Delete a topic; every subscription to it ends.
    DeleteTopic { name: String },
    /// Subscribe a client to topics.
    Subscribe { id: Uuid, topics: Vec<String> },
    /// Unsubscribe a client from topics.
    Unsubscribe { id: Uuid, topics: Vec<String> },
    /// Publish to a topic. MESSAGE is JSON; text that is not JSON is sent as a JSON string.
    Publish {
        topic: String,
        message: String,
        /// Send as this client (its name becomes `from`) instead of with the API key.
        #[arg(long)]
        id: Option<Uuid>,
        /// Publish at most once: the same key on the topic within the server's window is not
        /// published again.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Send to every connected client. MESSAGE as for `publish`.
    Broadcast {
        message: String,
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// This node's counters.
    Stats,
    /// Connect as a client and print every message as it arrives; reconnects by itself.
    Listen {
        id: Uuid,
        /// Subscribe to these topics first (the subscriptions outlive the socket).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Join relay pair ID: lines from stdin go to the partner, its frames come out.
    Relay {
        id: String,
        /// The relay key, when the server requires one.
        #[arg(long, env = "SWITCHBOARD_RELAY_KEY", hide_env_values = true)]
        relay_key: Option<String>,
    },
}

/// What ends a command with a non-zero exit.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Other(String),
}

impl<E> From<switchboard_client::api::Error<E>> for Failure
where
    switchboard_client::api::Error<E>: Into<ClientError>,
{
    fn from(err: switchboard_client::api::Error<E>) -> Self {
        Failure::Client(err.into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    let api = http_client(&cli.url, cli.api_key.as_deref())?;
    let out = Output { json: cli.json };
    match &cli.command {
        Command::Register { name } => {
            let name = match name {
                Some(name) => Some(checked(name)?),
                None => None,
            };
            let client = api.register(&types::RegisterRequest { name }).await?.into_inner();
            out.print(&client, || {
                format!(
                    "registered {}\n  id: {}\n  ws_url: {}",
                    client.name, client.id, client.ws_url
                )
            });
        }
        Command::Unregister { id } => {
            let answer = api.unregister(id).await?.into_inner();
            out.print(&answer, || {
                format!("unregistered; {} connection(s) closed", answer.closed_connections)
            });
        }
        Command::Topics => {
            let topics = api.list_topics().await?.into_inner();
            out.print(&topics, || {
                let lines =
                    topics.iter().map(|t| format!("{}\t{} subscriber(s)", t.name, t.subscribers));
                lines.collect::<Vec<_>>().join("\n")
            });
        }
        Command::CreateTopic { name, history_size, history_ttl_seconds } => {
            let name = checked(name)?;
            let body = types::CreateTopicRequest {
                name,
                history_size: *history_size,
                history_ttl_seconds: *history_ttl_seconds,
            };
            let topic = api.create_topic(&body).await?.into_inner();
            out.print(&topic, || format!("created topic {}", topic.name));
        }
        Command::History { topic, since, epoch, limit } => {
            let history = api
                .get_topic_history(topic, epoch.as_deref(), *limit, Some(*since))
                .await?
                .into_inner();
            out.print(&history, || {
                let mut lines = vec![format!(
                    "{}: offset {} (epoch {}){}",
                    history.topic,
                    history.offset,
                    history.epoch,
                    if history.complete { "" } else { "; incomplete: messages were missed" }
                )];
                for message in &history.messages {
                    let from = message.from.as_deref().unwrap_or("(server)");
                    lines.push(format!("{} {from}: {}", message.offset, message.data));
                }
                lines.join("\n")
            });
        }
        Command::DeleteTopic { name } => {
            let topic = api.delete_topic(name).await?.into_inner();
            out.print(&topic, || format!("deleted topic {}", topic.name));
        }
        Command::Subscribe { id, topics } | Command::Unsubscribe { id, topics } => {
            let body = subscription(*id, topics)?;
            let subscribing = matches!(cli.command, Command::Subscribe { .. });
            if subscribing {
                api.subscribe(&body).await?;
            } else {
                api.unsubscribe(&body).await?;
            }
            let verb = if subscribing { "subscribed" } else { "unsubscribed" };
            out.print(&json!({ verb: topics }), || format!("{verb}: {}", topics.join(", ")));
        }
        Command::Publish { topic, message, id, idempotency_key } => {
            let body = types::SendRequest {
                id: *id,
                message: message_value(message),
                idempotency_key: match idempotency_key {
                    Some(key) => Some(checked(key)?),
                    None => None,
                },
            };
            let sent = api.publish(topic, &body).await?.into_inner();
            out.print(&sent, || format!("published to {} recipient(s)", sent.recipients));
        }
        Command::Broadcast { message, id } => {
            let body = types::BroadcastRequest { id: *id, message: message_value(message) };
            let sent = api.broadcast(&body).await?.into_inner();
            out.print(&sent, || format!("broadcast to {} recipient(s)", sent.recipients));
        }
        Command::Stats => {
            let stats = api.stats().await?.into_inner();
            out.print(&stats, || {
                let mut text = format!(
                    "connections: {}\nconnected clients: {}\ndeliveries: {}\nslow-consumer closes: {}\nrelay peers: {}\nrelayed frames: {}",
                    stats.connections, stats.connected_clients, stats.deliveries,
                    stats.slow_consumer_closes, stats.relay_peers, stats.relayed_frames
                );
                if let Some(cluster) = &stats.cluster {
                    text += &format!(
                        "\nnode: {} (bus {}, {} reconnects)",
                        cluster.node_id,
                        if cluster.bus_connected { "connected" } else { "down" },
                        cluster.bus_reconnects
                    );
                }
                text
            });
        }
        Command::Listen { id, topics } => return listen(&api, &cli.url, *id, topics, out).await,
        Command::Relay { id, relay_key } => {
            return relay(&cli.url, id, relay_key.as_deref(), out).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A value the spec constrains (a name, a key), checked as the generated type parses it.
fn checked<T: std::str::FromStr>(text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|err| Failure::Other(format!("`{text}`: {err}")))
}

fn subscription(id: Uuid, topics: &[String]) -> Result<types::SubscriptionRequest, Failure> {
    let topics = topics.iter().map(|topic| checked(topic)).collect::<Result<_, _>>()?;
    Ok(types::SubscriptionRequest { id, topics })
}

/// A message argument: JSON when it parses, else the text as a JSON string.
fn message_value(message: &str) -> Value {
    serde_json::from_str(message).unwrap_or_else(|_| Value::String(message.to_owned()))
}

#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    /// Prints `value` as one JSON line, or the readable text.
    fn print(self, value: &impl Serialize, text: impl FnOnce() -> String) {
        let line =
            if self.json { serde_json::to_string(value).unwrap_or_default() } else { text() };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) ends the output, nothing else.
        let _ = writeln!(stdout, "{line}").and_then(|_| stdout.flush());
    }

    /// A state change of `listen`: to stderr, so stdout holds only messages.
    fn status(self, value: Value, text: impl FnOnce() -> String) {
        let line = if self.json { value.to_string() } else { text() };
        eprintln!("{line}");
    }
}

/// `listen`: the client's socket until it closes for good or Ctrl-C.
async fn listen(
    api: &HttpClient,
    base: &str,
    id: Uuid,
    topics: &[String],
    out: Output,
) -> Result<ExitCode, Failure> {
    if !topics.is_empty() {
        api.subscribe(&subscription(id, topics)?).await?;
    }
    let (socket, mut events) = Socket::connect(&ws_url(base, &id.to_string()));
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tokio::signal::ctrl_c() => {
                socket.close().await;
                continue;
            }
        };
        let Some(event) = event else { return Ok(ExitCode::SUCCESS) };
        match event {
            Event::Message { topic, from, data, offset, epoch } => {
                let mut value =
                    json!({"type": "message", "topic": topic, "from": from, "data": data});
                if let (Some(offset), Some(epoch)) = (offset, epoch) {
                    value["offset"] = json!(offset);
                    value["epoch"] = json!(epoch);
                }
                out.print(&value, || {
                    let topic = topic.as_deref().unwrap_or("(broadcast)");
                    format!("[{topic}] {}: {data}", from.as_deref().unwrap_or("(server)"))
                });
            }
            Event::Connected { topics } => out
                .status(json!({"type": "connected", "topics": topics}), || {
                    format!("connected; subscribed to: {}", topics.join(", "))
                }),
            Event::ServerError { error, message } => out
                .status(json!({"type": "error", "error": error, "message": message}), || {
                    format!("server error: {message} ({error})")
                }),
            Event::Disconnected { code, reason, retry_in } => out.status(
                json!({"type": "disconnected", "code": code, "reason": reason,
                       "retry_in_ms": retry_in.as_millis() as u64}),
                || format!("disconnected ({code} {reason}); reconnecting in {retry_in:.1?}"),
            ),
            Event::Closed { code, reason } => {
                out.status(json!({"type": "closed", "code": code, "reason": reason}), || {
                    format!("closed ({code} {reason})")
                });
                let by_program = code == 1000;
                return Ok(if by_program { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
        }
    }
}

/// `relay`: stdin lines out as text frames, the partner's frames (and the server's `/remote:`
/// and `/status:` notices) printed as they come.
async fn relay(base: &str, id: &str, key: Option<&str>, out: Output) -> Result<ExitCode, Failure> {
    let mut url = socket_url(base, &format!("/relay/{id}"));
    if let Some(key) = key {
        url = format!("{url}?key={}", percent_encode(key));
    }
    let (socket, _) = connect_async(url.as_str())
        .await
        .map_err(|err| Failure::Other(format!("cannot join relay `{id}`: {err}")))?;
    let (mut sink, mut stream) = socket.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    sink.send(Message::text(line)).await.map_err(|e| Failure::Other(e.to_string()))?;
                }
                // End of input: say goodbye with a close; the answer ends the stream.
                _ => {
                    stdin_open = false;
                    let bye = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let _ = sink.send(Message::Close(Some(bye))).await;
                }
            },
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    out.print(&json!({"text": text.as_str()}), || text.to_string());
                }
                Some(Ok(Message::Binary(bytes))) => {
                    out.print(&json!({"binary_bytes": bytes.len()}), || format!("({} binary bytes)", bytes.len()));
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    out.status(json!({"type": "closed", "code": code}), || format!("closed ({code})"));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(Failure::Other(format!("relay connection lost: {err}"))),
                None => return Ok(ExitCode::SUCCESS),
            },
        }
    }
}

/// `key` for a query string.
fn percent_encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
