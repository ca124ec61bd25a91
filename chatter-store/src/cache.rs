//! The query cache for hot reads (definitions and templates by id).
//!
//! Least-recently-used eviction within a capacity, and a time to live so that a cache in one
//! process never serves data older than the TTL when another process (sharing a Postgres
//! database) writes. Writes through this process invalidate the entry at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chatter_core::store::CacheStats;

#[derive(Debug)]
struct Entry<V> {
    value: V,
    inserted: Instant,
    last_used: u64,
}

#[derive(Debug)]
struct Inner<V> {
    map: HashMap<String, Entry<V>>,
    tick: u64,
    /// Incremented by every invalidation: a read that started before a write must not cache
    /// what it read (see [`QueryCache::put_if_current`]).
    generation: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// A small LRU cache with a TTL and statistics.
#[derive(Debug)]
pub struct QueryCache<V> {
    inner: Mutex<Inner<V>>,
    capacity: usize,
    ttl: Duration,
}

impl<V: Clone> QueryCache<V> {
    /// A cache of at most `capacity` entries (0 disables it), each valid for `ttl`.
    #[must_use]
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        QueryCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                tick: 0,
                generation: 0,
                hits: 0,
                misses: 0,
                evictions: 0,
            }),
            capacity,
            ttl,
        }
    }

    /// The cached value, counting a hit or a miss.
    pub fn get(&self, key: &str) -> Option<V> {
        let Ok(mut inner) = self.inner.lock() else {
            return None;
        };
        inner.tick += 1;
        let tick = inner.tick;
        let ttl = self.ttl;
        let found = match inner.map.get_mut(key) {
            Some(entry) if entry.inserted.elapsed() <= ttl => {
                entry.last_used = tick;
                Some(entry.value.clone())
            }
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        };
        if found.is_some() {
            inner.hits += 1;
        } else {
            inner.misses += 1;
        }
        found
    }

    /// The current generation; take it before reading the database, and cache what was read
    /// with [`QueryCache::put_if_current`].
    pub fn generation(&self) -> u64 {
        self.inner.lock().map_or(0, |inner| inner.generation)
    }

    /// Caches a value read from the database.
    pub fn put(&self, key: &str, value: V) {
        let generation = self.generation();
        self.put_if_current(key, value, generation);
    }

    /// Caches a value read from the database unless an invalidation happened since
    /// `generation` was taken (the value may then be stale).
    pub fn put_if_current(&self, key: &str, value: V, generation: u64) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.generation != generation {
            return;
        }
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.map.contains_key(key) && inner.map.len() >= self.capacity {
            let oldest = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                inner.map.remove(&oldest);
                inner.evictions += 1;
            }
        }
        inner.map.insert(
            key.to_owned(),
            Entry {
                value,
                inserted: Instant::now(),
                last_used: tick,
            },
        );
    }

    /// Drops an entry (after a write).
    pub fn invalidate(&self, key: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.generation += 1;
            inner.map.remove(key);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        let Ok(inner) = self.inner.lock() else {
            return CacheStats::default();
        };
        let reads = inner.hits + inner.misses;
        CacheStats {
            hits: inner.hits,
            misses: inner.misses,
            evictions: inner.evictions,
            entries: inner.map.len() as u64,
            hit_rate: if reads == 0 {
                0.0
            } else {
                inner.hits as f64 / reads as f64
            },
        }
    }
}

/// Adds two caches' statistics.
pub(crate) fn combine(a: CacheStats, b: CacheStats) -> CacheStats {
    let hits = a.hits + b.hits;
    let misses = a.misses + b.misses;
    let reads = hits + misses;
    CacheStats {
        hits,
        misses,
        evictions: a.evictions + b.evictions,
        entries: a.entries + b.entries,
        hit_rate: if reads == 0 {
            0.0
        } else {
            hits as f64 / reads as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_evictions_and_rate() {
        let cache = QueryCache::new(2, Duration::from_secs(60));
        assert_eq!(cache.get("a"), None);
        cache.put("a", 1);
        cache.put("b", 2);
        assert_eq!(cache.get("a"), Some(1));
        cache.put("c", 3); // evicts b, the least recently used
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.get("c"), Some(3));
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.evictions, stats.entries),
            (2, 2, 1, 2)
        );
        assert!((stats.hit_rate - 0.5).abs() < 1e-9);
    }

    #[test]
    fn invalidation_and_ttl() {
        let cache = QueryCache::new(4, Duration::from_millis(0));
        cache.put("a", 1);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cache.get("a"), None, "expired");
        let cache = QueryCache::new(4, Duration::from_secs(60));
        cache.put("a", 1);
        cache.invalidate("a");
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn a_read_overtaken_by_a_write_is_not_cached() {
        let cache = QueryCache::new(4, Duration::from_secs(60));
        let before_read = cache.generation();
        cache.invalidate("a"); // a write lands while the read is in flight
        cache.put_if_current("a", 1, before_read);
        assert_eq!(cache.get("a"), None);
        let fresh = cache.generation();
        cache.put_if_current("a", 2, fresh);
        assert_eq!(cache.get("a"), Some(2));
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = QueryCache::new(0, Duration::from_secs(60));
        cache.put("a", 1);
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.stats().hit_rate, 0.0);
    }
}
