//! The arrpc wire format, shared by the host and the client.
//!
//! - [`frame`]: where one MessagePack value ends in a byte stream.
//! - [`connection`]: whole messages in and out of one socket.
//! - [`envelope`]: HMAC-SHA256 signed envelopes.
//! - [`reply`]: the Python arrpc package's error reply strings.
//! - [`rpc`]: MessagePack-RPC requests, responses and notifications.
//! - [`pem`]: TLS certificates and keys from PEM files, checked at start.
//! - [`trace`]: W3C trace context carried with a message.

pub mod connection;
pub mod envelope;
pub mod frame;
pub mod pem;
pub mod reply;
pub mod rpc;
pub mod trace;

pub use connection::{Connection, ReadError};
pub use frame::FrameError;
pub use reply::{ErrorKind, RemoteError};
