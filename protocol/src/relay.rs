//! The fixed strings of the relay protocol (`/relay/{id}`): the notices the server sends a peer
//! and the prefixes of its error answers. Existing relay clients depend on them byte for byte.

/// Sent to a peer that waits for a partner.
pub const WAITING: &str = "/status:waiting";
/// Sent to both peers once they are paired.
pub const CONNECTED: &str = "/status:connected";
/// Sent to the waiting peer when a partner arrives (before [`CONNECTED`]).
pub const REMOTE_OPEN: &str = "/remote:open";
/// Sent to a peer whose partner left.
pub const REMOTE_CLOSE: &str = "/remote:close";
/// Texts starting with these are the server's; a peer cannot send them.
pub const RESERVED: [&str; 3] = ["/remote:", "/status:", "/error:"];
/// Answer to a frame sent while not paired, followed by the frame's text.
pub const NOT_RECEIVED: &str = "/error:0001:The message was not received by anyone.:";
/// Answer to a text with a reserved prefix, followed by the text.
pub const RESERVED_PREFIX: &str = "/error:0002:Reserved prefix.:";
