//! The one signal that tells every connection the host is shutting down.

use tokio::sync::watch;

/// Sends the shutdown signal; dropping it sends it too.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Receives the shutdown signal; cheap to clone, one per connection.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Completes once shutdown has begun (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which also means shut down.
        let _ = self.0.wait_for(|down| *down).await;
    }
}
