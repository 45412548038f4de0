//! The handlers a host serves, by name, swappable while messages run.
//!
//! A message takes the current [`HandlerSet`] when it starts and keeps its
//! handler for its whole run; a swap publishes a new set atomically, so
//! later messages see the new version and running ones finish on the old.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Handler, LoadError, Runtime};
use crate::config::Config;

/// One consistent view of the served handlers.
#[derive(Clone, Default)]
pub struct HandlerSet {
    /// Looked up on every message; the names are configured, and a client
    /// can only look one up, never add one, so a fast hash serves.
    handlers: HashMap<String, Arc<Handler>, foldhash::fast::RandomState>,
    /// Name of the handler for bare messages (the Python arrpc package's form).
    default: Option<String>,
}

impl HandlerSet {
    /// Loads every handler in `config`, in order; the first failure stops
    /// the load. Handlers in `reuse` whose module and settings are
    /// unchanged are kept instead of being compiled again.
    pub async fn load(
        runtime: &Runtime,
        config: &Config,
        base_dir: &Path,
        reuse: Option<&HandlerSet>,
    ) -> Result<HandlerSet, LoadError> {
        let mut handlers = HashMap::default();
        for handler in &config.handlers {
            let loaded = match reuse.and_then(|set| set.get(&handler.name)) {
                Some(old) => match runtime.reload(handler, base_dir, old).await? {
                    Some(new) => Arc::new(new),
                    None => old.clone(),
                },
                None => Arc::new(runtime.load(handler, base_dir).await?),
            };
            handlers.insert(handler.name.clone(), loaded);
        }
        Ok(HandlerSet {
            handlers,
            default: config.default_handler().map(str::to_owned),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Handler>> {
        self.handlers.get(name)
    }

    /// The handler for bare messages (the Python arrpc package's form).
    pub fn default_handler(&self) -> Option<&Arc<Handler>> {
        self.default
            .as_deref()
            .and_then(|name| self.handlers.get(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Handler>> {
        self.handlers.values()
    }
}

/// The current [`HandlerSet`], replaced whole on every change.
pub struct HandlerRegistry {
    current: ArcSwap<HandlerSet>,
}

impl HandlerRegistry {
    pub fn new(set: HandlerSet) -> Self {
        HandlerRegistry {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// The set as it is now; stays valid (and unchanged) while held.
    pub fn snapshot(&self) -> Arc<HandlerSet> {
        self.current.load_full()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Handler>> {
        self.current.load().get(name).cloned()
    }

    pub fn default_handler(&self) -> Option<Arc<Handler>> {
        self.current.load().default_handler().cloned()
    }

    /// Serves `handler` under its name from now on; returns the version it
    /// replaced.
    pub fn swap_handler(&self, handler: Arc<Handler>) -> Option<Arc<Handler>> {
        let mut previous = None;
        self.current.rcu(|set| {
            let mut next = HandlerSet::clone(set);
            previous = next
                .handlers
                .insert(handler.name().to_owned(), handler.clone());
            next
        });
        previous
    }

    /// Serves exactly `set` from now on.
    pub fn replace(&self, set: HandlerSet) {
        self.current.store(Arc::new(set));
    }
}
