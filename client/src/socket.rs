//! A client's WebSocket, kept open by a task: it reconnects with the protocol crate's backoff
//! (never after 4001, unregistered, or a close the program asked for), hands every server frame
//! over as an [`Event`], and answers each request when the server's `ack` or `error` with its
//! `ref` arrives.

use std::{collections::HashMap, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use switchboard_protocol::{
    ServerEvent,
    reconnect::{Backoff, describe_close, reconnect_helps},
    request::{Request, encode},
};
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, Message, protocol::CloseFrame, protocol::frame::coding::CloseCode},
};

/// Close code the client reports when the connection was lost without a close frame.
pub const CLOSE_ABNORMAL: u16 = 1006;

/// What happens on the socket, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Connected (again): the server's `welcome`, with the client's subscriptions.
    Connected { topics: Vec<String> },
    /// A delivery: `topic` is `None` for a broadcast, `from` is `None` when sent with the API key;
    /// a topic's message has its `offset` and the topic's `epoch`.
    Message {
        topic: Option<String>,
        from: Option<String>,
        data: Value,
        offset: Option<u64>,
        epoch: Option<String>,
    },
    /// The server reported a problem not tied to a request of this client.
    ServerError { error: String, message: String },
    /// The connection dropped; the next attempt starts after `retry_in`.
    Disconnected { code: u16, reason: String, retry_in: Duration },
    /// The socket is closed for good (unregistered, closed by the program, refused, or out of
    /// attempts); no event follows.
    Closed { code: u16, reason: String },
}

/// Why a request was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SocketError {
    /// The server refused it with an `error` frame.
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
    /// There is no connection right now (connecting, or between attempts).
    #[error("not connected")]
    NotConnected,
    /// The connection ended before the answer came.
    #[error("the connection ended before the server answered")]
    ConnectionEnded,
    /// No answer within [`Options::answer_timeout`].
    #[error("no answer from the server within {0:?}")]
    NoAnswer(Duration),
    /// The socket is closed for good.
    #[error("the socket is closed")]
    Closed,
    /// The data could not be encoded as JSON.
    #[error("{0}")]
    BadData(String),
}

/// How the socket behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub backoff: Backoff,
    /// How long a request waits for its `ack` or `error`.
    pub answer_timeout: Duration,
    /// Events buffered for the program; when it falls behind, reading from the server pauses
    /// (and a server whose queue for this client overflows closes it with 4008).
    pub event_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backoff: Backoff::default(),
            answer_timeout: Duration::from_secs(10),
            event_capacity: 1024,
        }
    }
}

/// A request on its way to the socket's task.
enum Command {
    Send { frame: OwnedRequest, answer: oneshot::Sender<Result<(), SocketError>> },
    Close,
}

enum OwnedRequest {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Publish { topic: String, data: String },
    Broadcast { data: String },
    Ping,
}

impl OwnedRequest {
    fn encode(&self, reference: u64) -> Result<String, SocketError> {
        let request = match self {
            OwnedRequest::Subscribe(topics) => Request::Subscribe(topics),
            OwnedRequest::Unsubscribe(topics) => Request::Unsubscribe(topics),
            OwnedRequest::Publish { topic, data } => Request::Publish { topic, data },
            OwnedRequest::Broadcast { data } => Request::Broadcast { data },
            OwnedRequest::Ping => Request::Ping,
        };
        encode(request, reference).map_err(SocketError::BadData)
    }
}

/// The handle of a socket. Dropping every handle closes the socket.
#[derive(Debug, Clone)]
pub struct Socket {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Send { .. } => "Send",
            Command::Close => "Close",
        })
    }
}

impl Socket {
    /// Connects to `ws_url` (the `ws_url` of `register`) with the default [`Options`]; must be
    /// called within a tokio runtime. The events arrive on the returned receiver.
    pub fn connect(ws_url: &str) -> (Socket, mpsc::Receiver<Event>) {
        Socket::connect_with(ws_url, Options::default())
    }

    pub fn connect_with(ws_url: &str, options: Options) -> (Socket, mpsc::Receiver<Event>) {
        crate::install_crypto_provider();
        let (commands, command_rx) = mpsc::channel(64);
        let (events, event_rx) = mpsc::channel(options.event_capacity.max(1));
        let task =
            Task { url: ws_url.to_owned(), options, commands: command_rx, events, next_ref: 1 };
        tokio::spawn(task.run());
        (Socket { commands }, event_rx)
    }

    pub async fn subscribe(&self, topics: &[&str]) -> Result<(), SocketError> {
        self.request(OwnedRequest::Subscribe(topics.iter().map(|t| t.to_string()).collect())).await
    }

    pub async fn unsubscribe(&self, topics: &[&str]) -> Result<(), SocketError> {
        self.request(OwnedRequest::Unsubscribe(topics.iter().map(|t| t.to_string()).collect()))
            .await
    }

    /// Publishes `data` (any JSON value) to `topic`'s subscribers.
    pub async fn publish(&self, topic: &str, data: &impl Serialize) -> Result<(), SocketError> {
        let data = to_json(data)?;
        self.request(OwnedRequest::Publish { topic: topic.to_owned(), data }).await
    }

    /// Sends `data` to every connected client.
    pub async fn broadcast(&self, data: &impl Serialize) -> Result<(), SocketError> {
        let data = to_json(data)?;
        self.request(OwnedRequest::Broadcast { data }).await
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<(), SocketError> {
        self.request(OwnedRequest::Ping).await
    }

    /// Closes the socket (code 1000) and stops reconnecting; [`Event::Closed`] follows.
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }

    async fn request(&self, frame: OwnedRequest) -> Result<(), SocketError> {
        let (answer, answered) = oneshot::channel();
        let command = Command::Send { frame, answer };
        self.commands.send(command).await.map_err(|_| SocketError::Closed)?;
        answered.await.unwrap_or(Err(SocketError::Closed))
    }
}

fn to_json(data: &impl Serialize) -> Result<String, SocketError> {
    serde_json::to_string(data).map_err(|err| SocketError::BadData(err.to_string()))
}

/// How one connection ended.
enum End {
    /// The server closed it or it was lost: maybe reconnect.
    Dropped { code: u16, reason: String },
    /// The program closed it, or dropped every handle.
    ByProgram,
}

/// A request sent and not answered yet.
struct Pending {
    answer: oneshot::Sender<Result<(), SocketError>>,
    deadline: Instant,
}

struct Task {
    url: String,
    options: Options,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// The next `ref`; never reused, so a late answer from an old connection matches nothing.
    next_ref: u64,
}

impl Task {
    async fn run(mut self) {
        let mut attempt = 0;
        loop {
            let (code, reason) = match connect_async(self.url.as_str()).await {
                Ok((socket, _)) => {
                    attempt = 0;
                    match self.serve(socket).await {
                        End::ByProgram => return self.closed(1000, "closed by the program").await,
                        End::Dropped { code, reason } => (code, reason),
                    }
                }
                // The server refused the handshake (an unknown id, a refused origin): trying
                // again would be refused again.
                Err(tungstenite::Error::Http(response)) if response.status().is_client_error() => {
                    let reason =
                        format!("the server refused the connection: {}", response.status());
                    return self.closed(CLOSE_ABNORMAL, &reason).await;
                }
                Err(err) => (CLOSE_ABNORMAL, err.to_string()),
            };
            if !reconnect_helps(code) {
                let reason = if reason.is_empty() { describe_close(code) } else { &reason };
                return self.closed(code, reason).await;
            }
            attempt += 1;
            let Some(delay) = self.options.backoff.delay_ms(attempt, fastrand::f64()) else {
                let reason = format!("gave up after {} attempts: {reason}", attempt - 1);
                return self.closed(code, &reason).await;
            };
            let retry_in = Duration::from_millis(delay.into());
            self.emit(Event::Disconnected { code, reason, retry_in }).await;
            if !self.wait(retry_in).await {
                return self.closed(1000, "closed by the program").await;
            }
        }
    }

    /// Waits out a backoff delay, refusing requests meanwhile; false when the program closed.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Send { answer, .. }) => {
                        let _ = answer.send(Err(SocketError::NotConnected));
                    }
                    Some(Command::Close) | None => return false,
                },
            }
        }
    }

    async fn serve<S>(&mut self, socket: tokio_tungstenite::WebSocketStream<S>) -> End
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = socket.split();
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut sweep = interval(Duration::from_millis(250));
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut close_heard: Option<(u16, String)> = None;
        let end = loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.received(&text, &mut pending).await,
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite answers the close; the stream ends after it.
                        close_heard = Some(match frame {
                            Some(frame) => (frame.code.into(), frame.reason.to_string()),
                            None => (1005, String::new()),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        let (code, reason) =
                            close_heard.take().unwrap_or((CLOSE_ABNORMAL, err.to_string()));
                        break End::Dropped { code, reason };
                    }
                    None => {
                        let (code, reason) = close_heard
                            .take()
                            .unwrap_or((CLOSE_ABNORMAL, "connection lost".to_owned()));
                        break End::Dropped { code, reason };
                    }
                },
                command = self.commands.recv() => match command {
                    Some(Command::Send { frame, answer }) => {
                        let reference = self.next_ref;
                        self.next_ref += 1;
                        let text = match frame.encode(reference) {
                            Ok(text) => text,
                            Err(err) => {
                                let _ = answer.send(Err(err));
                                continue;
                            }
                        };
                        let deadline = Instant::now() + self.options.answer_timeout;
                        pending.insert(reference, Pending { answer, deadline });
                        if let Err(err) = sink.send(Message::text(text)).await {
                            break End::Dropped { code: CLOSE_ABNORMAL, reason: err.to_string() };
                        }
                    }
                    Some(Command::Close) | None => {
                        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        // Give the server a moment to answer the close handshake.
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            while let Some(Ok(_)) = stream.next().await {}
                        })
                        .await;
                        break End::ByProgram;
                    }
                },
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let timeout = self.options.answer_timeout;
                    let expired: Vec<u64> = pending
                        .iter()
                        .filter(|(_, waiting)| waiting.deadline <= now)
                        .map(|(reference, _)| *reference)
                        .collect();
                    for waiting in expired.iter().filter_map(|r| pending.remove(r)) {
                        let _ = waiting.answer.send(Err(SocketError::NoAnswer(timeout)));
                    }
                }
            }
        };
        for (_, waiting) in pending {
            let _ = waiting.answer.send(Err(SocketError::ConnectionEnded));
        }
        end
    }

    async fn received(&mut self, text: &str, pending: &mut HashMap<u64, Pending>) {
        let Ok(event) = ServerEvent::parse(text) else {
            let message = format!("the server sent a frame this client cannot read: {text}");
            return self
                .emit(Event::ServerError { error: "unreadable_frame".into(), message })
                .await;
        };
        match event {
            ServerEvent::Welcome { topics, .. } => self.emit(Event::Connected { topics }).await,
            ServerEvent::Message { topic, from, data, offset, epoch } => {
                self.emit(Event::Message { topic, from, data, offset, epoch }).await
            }
            ServerEvent::Ack { reference } => {
                if let Some(waiting) = take(pending, reference.as_ref()) {
                    let _ = waiting.answer.send(Ok(()));
                }
            }
            ServerEvent::Error { reference, error, message } => {
                match take(pending, reference.as_ref()) {
                    Some(waiting) => {
                        let refused = SocketError::Refused { code: error, message };
                        let _ = waiting.answer.send(Err(refused));
                    }
                    None => self.emit(Event::ServerError { error, message }).await,
                }
            }
        }
    }

    /// Hands an event to the program; one that stopped listening loses nothing else.
    async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    async fn closed(mut self, code: u16, reason: &str) {
        self.commands.close();
        while let Some(command) = self.commands.recv().await {
            if let Command::Send { answer, .. } = command {
                let _ = answer.send(Err(SocketError::Closed));
            }
        }
        self.emit(Event::Closed { code, reason: reason.to_owned() }).await;
    }
}

/// The pending request a server answer's `ref` names.
fn take(pending: &mut HashMap<u64, Pending>, reference: Option<&Value>) -> Option<Pending> {
    pending.remove(&reference?.as_u64()?)
}
