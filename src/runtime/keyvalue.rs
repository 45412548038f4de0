//! `wasi:keyvalue@0.2.0-draft2` for guests: the stores their handler's
//! `stores` lists, opened by name. A bucket is a handle on a shared
//! [`Store`]; a compare-and-swap handle keeps the value it read, and the
//! swap writes only if the key still holds it.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::HostState;
use super::world::v0_3::wasi::keyvalue::{atomics, batch, store};
use crate::keyvalue::{Store, StoreError, Swap};

/// An open store, as a guest holds it.
pub struct Bucket(Arc<Store>);

/// A compare-and-swap in progress: the key and what it held when read.
pub struct Cas {
    store: Arc<Store>,
    key: String,
    current: Option<Vec<u8>>,
}

impl HostState {
    fn bucket(&self, bucket: &Resource<Bucket>) -> Result<Arc<Store>, store::Error> {
        self.table_ref()
            .get(bucket)
            .map(|b| b.0.clone())
            .map_err(|e| store::Error::Other(format!("bad bucket handle: {e}")))
    }
}

fn wit(error: StoreError) -> store::Error {
    store::Error::Other(error.to_string())
}

impl store::Host for HostState {
    /// A store the handler does not list is `access-denied`, whether or
    /// not the host has one by that name.
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        let store = self
            .recipe()
            .stores
            .open(&identifier)
            .ok_or(store::Error::AccessDenied)?
            .clone();
        self.table()
            .push(Bucket(store))
            .map_err(|e| store::Error::Other(format!("too many open buckets: {e}")))
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        self.bucket(&bucket)?.get(&key).await.map_err(wit)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        self.bucket(&bucket)?.set(&key, value).await.map_err(wit)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        self.bucket(&bucket)?.delete(&key).await.map_err(wit)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<bool, store::Error> {
        self.bucket(&bucket)?.exists(&key).await.map_err(wit)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        let (keys, cursor) = self
            .bucket(&bucket)?
            .list_keys(cursor.as_deref())
            .await
            .map_err(wit)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        self.bucket(&bucket)?
            .increment(&key, delta)
            .await
            .map_err(wit)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let Cas {
            store,
            key,
            current,
        } = self.table().delete(cas).map_err(|e| {
            atomics::CasError::StoreError(store::Error::Other(format!("bad cas handle: {e}")))
        })?;
        match store.swap(&key, current.as_deref(), value).await {
            Ok(Swap::Done) => Ok(()),
            Ok(Swap::Changed(now)) => {
                let retry = Cas {
                    store,
                    key,
                    current: now,
                };
                let retry = self.table().push(retry).map_err(|e| {
                    atomics::CasError::StoreError(store::Error::Other(format!(
                        "too many cas handles: {e}"
                    )))
                })?;
                Err(atomics::CasError::CasFailed(retry))
            }
            Err(e) => Err(atomics::CasError::StoreError(wit(e))),
        }
    }
}

impl atomics::HostCas for HostState {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Resource<Cas>, store::Error> {
        let store = self.bucket(&bucket)?;
        let current = store.get(&key).await.map_err(wit)?;
        self.table()
            .push(Cas {
                store,
                key,
                current,
            })
            .map_err(|e| store::Error::Other(format!("too many cas handles: {e}")))
    }

    fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, store::Error> {
        self.table_ref()
            .get(&cas)
            .map(|c| c.current.clone())
            .map_err(|e| store::Error::Other(format!("bad cas handle: {e}")))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table().delete(cas)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let values = self.bucket(&bucket)?.get_many(&keys).await.map_err(wit)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|v| (key, v)))
            .collect())
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        self.bucket(&bucket)?
            .set_many(key_values)
            .await
            .map_err(wit)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        self.bucket(&bucket)?.delete_many(keys).await.map_err(wit)
    }
}
