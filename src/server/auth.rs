//! Checking a message's signature (and stamp) before any handler sees it.

use std::time::{SystemTime, UNIX_EPOCH};

use arrpc_wire::envelope::{self, AuthError};
use arrpc_wire::reply::{AUTH_FAILED, ErrorKind};

use super::replay::{ReplayError, ReplayGuard};

/// The accepted secrets and, when enabled, the replay guard.
pub struct Authenticator {
    secrets: Vec<Vec<u8>>,
    replay: Option<ReplayGuard>,
}

/// Why a message was refused; the peer learns only [`Refusal::answer`].
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Replay(ReplayError),
    #[error("signed data is not exactly one MessagePack value")]
    DataNotMessagePack,
}

impl Refusal {
    /// What the peer is told: signature and stamp failures all get the
    /// Python arrpc package's one auth error, so a prober learns nothing of
    /// which check failed; only a full replay cache says so, since retrying
    /// later helps there. Written by [`super::failure::reply`].
    pub(super) fn answer(&self) -> (ErrorKind, String) {
        match self {
            Refusal::Replay(ReplayError::Full(_)) => (
                ErrorKind::Rpc,
                "replay protection is at capacity; try again shortly".into(),
            ),
            Refusal::Auth(_) | Refusal::Replay(_) => (ErrorKind::Auth, AUTH_FAILED.into()),
            Refusal::DataNotMessagePack => (ErrorKind::Rpc, self.to_string()),
        }
    }
}

impl Authenticator {
    /// `secrets` must not be empty: without a secret there is nothing to check.
    pub fn new(secrets: Vec<Vec<u8>>, replay: Option<ReplayGuard>) -> Self {
        assert!(!secrets.is_empty(), "an authenticator needs a secret");
        Authenticator { secrets, replay }
    }

    /// The signed message inside `frame` (a sub-slice of it).
    pub fn open<'a>(&self, frame: &'a [u8]) -> Result<&'a [u8], Refusal> {
        let data = match &self.replay {
            None => envelope::verify(frame, &self.secrets)?,
            Some(guard) => {
                let stamped = envelope::verify_stamped(frame, &self.secrets)?;
                guard
                    .check(stamped.stamp, unix_ms())
                    .map_err(Refusal::Replay)?;
                stamped.data
            }
        };
        if !arrpc_wire::frame::is_single_value(data) {
            return Err(Refusal::DataNotMessagePack);
        }
        Ok(data)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
