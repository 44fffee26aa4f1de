//! TTL cache for contact lookups, on a virtual clock.
//!
//! Keyed by the caller's normalized number (or account). Store
//! `Option<Contact>` to cache negative results too: "this number is unknown"
//! is as worth remembering as a hit, and spares the CRM a lookup per call
//! from an unlisted number. Use [`Cache::put_for`] to give misses a shorter
//! lifetime than hits.
//!
//! Bounded: at capacity, a `put` of a new key first drops expired entries,
//! then, if still full, the oldest-inserted entry. Expired entries are also
//! dropped when a `get` meets them. Sans-IO: every call takes `now`.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    expires: Instant,
    /// Insertion order, the key of `order`.
    seq: u64,
}

/// A bounded TTL cache.
#[derive(Debug, Clone)]
pub struct Cache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<K, Entry<V>>,
    /// Insertion sequence → key, oldest first.
    order: BTreeMap<u64, K>,
    next_seq: u64,
}

impl<K: Eq + Hash + Clone, V> Cache<K, V> {
    /// A cache whose entries live `ttl` by default and which holds at most
    /// `capacity` entries (at least 1).
    pub fn new(ttl: Duration, capacity: usize) -> Cache<K, V> {
        Cache {
            ttl,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The value for `key` if present and not expired (an entry expires at
    /// `put` time + ttl, exclusive: at that instant it is gone).
    pub fn get(&mut self, now: Instant, key: &K) -> Option<&V> {
        let expired = now >= self.entries.get(key)?.expires;
        if expired {
            self.remove(key);
            return None;
        }
        self.entries.get(key).map(|e| &e.value)
    }

    /// Stores `value` for the default ttl, replacing any entry for `key`.
    pub fn put(&mut self, now: Instant, key: K, value: V) {
        self.put_for(now, key, value, self.ttl);
    }

    /// Stores `value` for `ttl`, replacing any entry for `key`.
    pub fn put_for(&mut self, now: Instant, key: K, value: V, ttl: Duration) {
        if self.remove(&key).is_none() && self.entries.len() >= self.capacity {
            self.purge(now);
            while self.entries.len() >= self.capacity {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.entries.remove(&oldest);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
                seq,
            },
        );
    }

    /// Removes `key`, returning its value (expired or not).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let e = self.entries.remove(key)?;
        self.order.remove(&e.seq);
        Some(e.value)
    }

    /// Drops every expired entry.
    pub fn purge(&mut self, now: Instant) {
        let entries = &mut self.entries;
        self.order.retain(|_, k| {
            let keep = entries.get(k).is_some_and(|e| now < e.expires);
            if !keep {
                entries.remove(k);
            }
            keep
        });
    }

    /// Entries held, expired ones included until dropped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn cache(capacity: usize) -> (Cache<&'static str, Option<u32>>, Instant) {
        (Cache::new(TTL, capacity), Instant::now())
    }

    #[test]
    fn get_returns_value_until_ttl_then_nothing() {
        let (mut c, t0) = cache(4);
        c.put(t0, "+815012345678", Some(1));
        assert_eq!(c.get(t0, &"+815012345678"), Some(&Some(1)));
        let just_before = t0 + TTL - Duration::from_nanos(1);
        assert_eq!(c.get(just_before, &"+815012345678"), Some(&Some(1)));
        assert_eq!(c.get(t0 + TTL, &"+815012345678"), None);
        assert!(c.is_empty(), "expired entry dropped on get");
    }

    #[test]
    fn negative_results_are_cached() {
        let (mut c, t0) = cache(4);
        c.put_for(t0, "+19999999999", None, Duration::from_secs(5));
        assert_eq!(
            c.get(t0 + Duration::from_secs(4), &"+19999999999"),
            Some(&None)
        );
        assert_eq!(c.get(t0 + Duration::from_secs(5), &"+19999999999"), None);
        assert_eq!(c.get(t0, &"+10000000000"), None, "never stored");
    }

    #[test]
    fn put_replaces_and_restarts_ttl() {
        let (mut c, t0) = cache(4);
        c.put(t0, "a", Some(1));
        let t1 = t0 + Duration::from_secs(30);
        c.put(t1, "a", Some(2));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(t0 + TTL, &"a"), Some(&Some(2)));
        assert_eq!(c.get(t1 + TTL, &"a"), None);
    }

    #[test]
    fn full_cache_evicts_the_oldest() {
        let (mut c, t0) = cache(3);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            c.put(t0 + Duration::from_secs(i as u64), k, Some(i as u32));
        }
        c.put(t0 + Duration::from_secs(3), "d", Some(3));
        assert_eq!(c.len(), 3);
        let now = t0 + Duration::from_secs(4);
        assert_eq!(c.get(now, &"a"), None);
        assert!(c.get(now, &"b").is_some());
        assert!(c.get(now, &"d").is_some());
    }

    #[test]
    fn replacing_a_key_makes_it_young_again() {
        let (mut c, t0) = cache(2);
        c.put(t0, "a", Some(1));
        c.put(t0, "b", Some(2));
        c.put(t0, "a", Some(3));
        c.put(t0, "c", Some(4));
        assert!(c.get(t0, &"b").is_none(), "b is now the oldest");
        assert_eq!(c.get(t0, &"a"), Some(&Some(3)));
    }

    #[test]
    fn full_cache_drops_expired_before_live_entries() {
        let (mut c, t0) = cache(2);
        c.put(t0, "old-live", Some(1));
        c.put_for(t0, "short", None, Duration::from_secs(1));
        c.put(t0 + Duration::from_secs(2), "new", Some(2));
        assert!(c.get(t0 + Duration::from_secs(2), &"old-live").is_some());
        assert!(c.get(t0 + Duration::from_secs(2), &"new").is_some());
    }

    #[test]
    fn purge_and_remove() {
        let (mut c, t0) = cache(8);
        c.put_for(t0, "a", Some(1), Duration::from_secs(1));
        c.put(t0, "b", Some(2));
        c.purge(t0 + Duration::from_secs(1));
        assert_eq!(c.len(), 1);
        assert_eq!(c.remove(&"b"), Some(Some(2)));
        assert!(c.is_empty());
        assert_eq!(c.remove(&"b"), None);
    }

    #[test]
    fn zero_capacity_holds_one() {
        let (mut c, t0) = cache(0);
        c.put(t0, "a", Some(1));
        c.put(t0, "b", Some(2));
        assert_eq!(c.len(), 1);
        assert!(c.get(t0, &"b").is_some());
    }
}
