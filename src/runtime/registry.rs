//! The handlers a host serves, by name.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{Handler, LoadError, Runtime};
use crate::config::Config;

/// Every loaded handler and which one receives bare messages.
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<Handler>>,
    default: Option<Arc<Handler>>,
}

impl HandlerRegistry {
    /// Loads every handler in `config`, in order; the first failure stops
    /// the load.
    pub async fn load(
        runtime: &Runtime,
        config: &Config,
        base_dir: &Path,
    ) -> Result<Self, LoadError> {
        let mut handlers = HashMap::new();
        for handler in &config.handlers {
            let loaded = runtime.load(handler, base_dir).await?;
            handlers.insert(handler.name.clone(), Arc::new(loaded));
        }
        let default = config
            .default_handler()
            .and_then(|name| handlers.get(name).cloned());
        Ok(HandlerRegistry { handlers, default })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Handler>> {
        self.handlers.get(name)
    }

    /// The handler for the seed's bare messages.
    pub fn default_handler(&self) -> Option<&Arc<Handler>> {
        self.default.as_ref()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Handler>> {
        self.handlers.values()
    }
}
