//! Why a message produced no reply from its handler: the one error type a
//! call ends in, shared by the handler and the store it runs in, and mapped
//! to the client's reply in `server::failure`.

use std::sync::Arc;
use std::time::Duration;

/// Why a message produced no reply from its handler. The `Display` text is
/// what the client receives.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("handler `{handler}` is busy: all {max} instances are in use")]
    Busy { handler: Arc<str>, max: u32 },
    #[error("handler `{handler}` exceeded its timeout of {} ms", after.as_millis())]
    Timeout { handler: Arc<str>, after: Duration },
    #[error("handler `{handler}` exceeded its memory limit of {} MiB", limit >> 20)]
    MemoryLimit { handler: Arc<str>, limit: usize },
    #[error("handler `{handler}` exhausted its fuel limit of {fuel}")]
    FuelExhausted { handler: Arc<str>, fuel: u64 },
    /// A granted directory could not be opened for this message.
    #[error("handler `{handler}` cannot open its granted directory {host}: {detail}")]
    Grant {
        handler: Arc<str>,
        host: String,
        detail: String,
    },
    #[error("handler `{handler}` trapped: {detail}")]
    Trap { handler: Arc<str>, detail: String },
    /// The handler returned an error: its text goes to the client unchanged.
    #[error("{0}")]
    Failed(String),
    #[error("handler `{handler}` returned {reason}")]
    InvalidOutput {
        handler: Arc<str>,
        reason: &'static str,
    },
}
