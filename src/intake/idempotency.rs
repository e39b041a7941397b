//! `Idempotency-Key`: a client that retries a submission (the network dropped the answer, the
//! person pressed the button twice) gets the first answer again, with the same receipt, instead
//! of a second report. The key is stored with the report so this holds across restarts; a moka
//! cache answers repeats without a store round trip.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::Accepted;
use crate::store::{DynStore, StoreResult};
use crate::telemetry::names;

const CACHE_NAME: &str = "idempotency";

/// A client-chosen key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        if raw.is_empty() || raw.len() > 255 || !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(InvalidIdempotencyKey);
        }
        // Checked above: every byte is visible ASCII.
        String::from_utf8(raw.to_vec())
            .map(Self)
            .map_err(|_| InvalidIdempotencyKey)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an earlier request with the same key tells us about this one.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// First time: go ahead.
    New,
    /// Same key, same body: answer this again.
    Replay(Accepted),
    /// Same key, different body.
    Mismatch,
}

#[derive(Clone)]
struct Remembered {
    request_hash: [u8; 32],
    answer: Accepted,
}

#[derive(Clone)]
pub struct Idempotency {
    cache: Cache<IdempotencyKey, Arc<Remembered>>,
    store: DynStore,
}

impl Idempotency {
    pub fn new(store: DynStore, entries: u64, ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(entries)
                .time_to_live(ttl)
                .build(),
            store,
        }
    }

    /// Compare with what was first sent under `key`: in memory first, then in the store.
    pub async fn check(&self, key: &IdempotencyKey, request_hash: &[u8; 32]) -> StoreResult<Seen> {
        let remembered = match self.cache.get(key).await {
            Some(hit) => {
                count(CACHE_NAME, "hit");
                Some(hit)
            }
            None => {
                count(CACHE_NAME, "miss");
                match self.store.find_idempotent(key.as_str()).await? {
                    Some(stored) => {
                        let remembered = Arc::new(Remembered {
                            request_hash: stored.request_hash,
                            answer: Accepted {
                                receipt: stored.receipt,
                                incident_id: stored.incident_id,
                                received_at: stored.received_at,
                            },
                        });
                        self.cache
                            .insert(key.clone(), Arc::clone(&remembered))
                            .await;
                        Some(remembered)
                    }
                    None => None,
                }
            }
        };
        Ok(match remembered {
            None => Seen::New,
            Some(r) if r.request_hash == *request_hash => Seen::Replay(r.answer.clone()),
            Some(_) => Seen::Mismatch,
        })
    }

    /// Keep the answer given to a new key.
    pub async fn remember(&self, key: IdempotencyKey, request_hash: [u8; 32], answer: Accepted) {
        self.cache
            .insert(
                key,
                Arc::new(Remembered {
                    request_hash,
                    answer,
                }),
            )
            .await;
    }
}

fn count(cache: &'static str, result: &'static str) {
    metrics::counter!(names::CACHE_REQUESTS, "cache" => cache, "result" => result).increment(1);
}

/// SHA-256 of the body's JSON value with object keys in sorted order, so the same report sent
/// with different whitespace or key order counts as the same request.
pub fn request_hash(body: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    feed(&mut hasher, body);
    hasher.finalize().into()
}

fn feed(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                feed(hasher, &Value::String(key.clone()));
                hasher.update(b":");
                feed(hasher, &map[key]);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                feed(hasher, item);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(&[b'x'; 255]).is_ok());
        assert!(IdempotencyKey::parse(&[b'x'; 256]).is_err());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(b"has space").is_err());
        assert!(IdempotencyKey::parse("키".as_bytes()).is_err());
    }

    #[test]
    fn the_hash_ignores_key_order_and_whitespace_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"x":"y","z":[1,2]}}"#).unwrap();
        let b: Value =
            serde_json::from_str("{ \"b\": {\"z\": [1, 2], \"x\": \"y\"},\n \"a\": 1 }").unwrap();
        let c: Value = serde_json::from_str(r#"{"a":2,"b":{"x":"y","z":[1,2]}}"#).unwrap();
        let d: Value = serde_json::from_str(r#"{"a":1,"b":{"x":"y","z":[2,1]}}"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
        assert_ne!(request_hash(&a), request_hash(&d));
    }
}
