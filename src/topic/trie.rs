//! The subscription trie: which subscriptions match a published topic.

use std::collections::HashMap;
use std::hash::Hash;
use std::mem;

use super::split_level;

/// Subscriptions (filter, key) -> value, organised by filter level, for matching published
/// topics.
///
/// `K` identifies a subscriber (e.g. a session key) and `V` is the subscription's options.
/// Each filter is split into levels on `/`; the node a filter ends at holds that filter's
/// subscribers. Literal levels are children in a hash map; `+` and `#` have their own slots so a
/// walk never scans children. Filters are stored and compared byte for byte, with no
/// normalization (MQTT-4.7.3-4); a `$share/...` filter is stored literally.
///
/// Matching follows exactly the rules of [`super::matches`]. Nothing recurses, so very deep
/// filters and topics (tens of thousands of levels) cannot overflow the stack, and removing the
/// last subscription on a branch prunes the branch so memory does not grow.
#[derive(Debug)]
pub(crate) struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Clone + Eq + Hash, V> SubscriptionTrie<K, V> {
    /// An empty trie. Does not allocate.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Subscribes `key` to `filter` with options `value`.
    ///
    /// If `key` already had exactly this filter (compared byte for byte), its value is replaced
    /// and the old one returned: a SUBSCRIBE for an existing filter replaces the subscription
    /// (MQTT-3.8.4-3). Otherwise returns `None`. The filter should be valid
    /// ([`super::valid_topic_filter`]); see the module documentation for invalid ones.
    pub(crate) fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_or_insert(level);
        }
        let old = node.subs.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Unsubscribes `key` from `filter`, returning the removed value, or `None` if `key` had no
    /// subscription with exactly this filter.
    ///
    /// The filter is compared byte for byte with the stored filters, wildcards included
    /// (MQTT-3.10.4-1): removing `a/+` does not touch `a/b`. Nodes left without subscribers or
    /// children are removed.
    pub(crate) fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        // Pass 1, read-only: find the node, and the deepest node on the path that stays anyway
        // (it has subscribers or another child, or is the root); everything below it goes if the
        // filter's node ends up empty.
        let mut node = &self.root;
        let mut keep_depth = 0;
        for (depth, level) in filter.split('/').enumerate() {
            if depth == 0 || !node.subs.is_empty() || node.child_count() > 1 {
                keep_depth = depth;
            }
            node = node.child(level)?;
        }
        node.subs.get(key)?;
        let prune = node.subs.len() == 1 && node.child_count() == 0;

        // Pass 2: remove the subscription.
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_mut(level)?;
        }
        let value = node.subs.remove(key)?;
        self.len -= 1;

        // Pass 3: cut the branch that is now empty.
        if prune {
            let mut levels = filter.split('/');
            let mut node = &mut self.root;
            for level in levels.by_ref().take(keep_depth) {
                node = node.child_mut(level)?;
            }
            let cut = levels.next()?;
            drop(node.take_child(cut));
        }
        Some(value)
    }

    /// The value of `key`'s subscription to exactly `filter` (compared byte for byte), if any.
    #[cfg(test)]
    pub(crate) fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.child(level)?;
        }
        node.subs.get(key)
    }

    /// Calls `f` once for every stored (filter, key) whose filter matches the topic name
    /// `topic`, following the rules of [`super::matches`] (including MQTT-4.7.2-1: filters
    /// starting with `+` or `#` do not match topics starting with `$`).
    ///
    /// A key subscribed with several matching filters is reported once per filter; the caller
    /// merges them (MQTT-3.3.5-1). The order of calls is unspecified. The walk does not
    /// allocate unless more than 16 `+` branches are pending at once, and costs O(levels
    /// visited + matches).
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        let (level, rest) = split_level(topic);
        let mut stack = WalkStack::new((&self.root, rest));
        // The root is special: its `+` and `#` slots do not apply to `$` topics.
        if !topic.starts_with('$') {
            if let Some(hash) = &self.root.hash {
                hash.subs.for_each(&mut f);
            }
            if let Some(plus) = &self.root.plus {
                stack.push((plus, rest));
            }
        }
        if let Some(child) = self.root.children.get(level) {
            stack.push((child, rest));
        }
        // Each entry is a node whose level matched, and what remains of the topic after it.
        while let Some((mut node, mut rest)) = stack.pop() {
            loop {
                // `#` below this node matches this level (its parent) and anything further.
                if let Some(hash) = &node.hash {
                    hash.subs.for_each(&mut f);
                }
                let Some(remaining) = rest else {
                    node.subs.for_each(&mut f);
                    break;
                };
                let (level, next) = split_level(remaining);
                if let Some(plus) = &node.plus {
                    stack.push((plus, next));
                }
                match node.children.get(level) {
                    Some(child) => {
                        node = child;
                        rest = next;
                    }
                    None => break,
                }
            }
        }
    }

    /// The number of stored (filter, key) subscriptions.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True if there are no subscriptions.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One filter level. The root stands for no level and never has subscribers.
#[derive(Debug)]
struct Node<K, V> {
    /// Literal next levels.
    children: HashMap<Box<str>, Node<K, V>>,
    /// The `+` next level.
    plus: Option<Box<Node<K, V>>>,
    /// The `#` next level. Its own children exist only for invalid filters and never match.
    hash: Option<Box<Node<K, V>>>,
    /// Subscribers whose filter ends at this node.
    subs: Subscribers<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            plus: None,
            hash: None,
            subs: Subscribers::default(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.children.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        match level {
            "+" => self.plus.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => {
                // Look up before inserting so an existing level costs no allocation.
                if !self.children.contains_key(level) {
                    self.children.insert(level.into(), Self::default());
                }
                self.children
                    .get_mut(level)
                    .expect("child exists: just checked or inserted")
            }
        }
    }

    fn take_child(&mut self, level: &str) -> Option<Self> {
        match level {
            "+" => self.plus.take().map(|node| *node),
            "#" => self.hash.take().map(|node| *node),
            _ => self.children.remove(level),
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    /// Moves all children into `out`, leaving this node without children.
    fn detach_children(&mut self, out: &mut Vec<Self>) {
        out.extend(self.children.drain().map(|(_, child)| child));
        out.extend(self.plus.take().map(|node| *node));
        out.extend(self.hash.take().map(|node| *node));
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Drops the subtree iteratively: the default recursive drop could overflow the stack on a
    /// filter with tens of thousands of levels.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() && self.hash.is_none() {
            return;
        }
        let mut pending = Vec::new();
        self.detach_children(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.detach_children(&mut pending);
            // `node` now has no children; dropping it here does not recurse.
        }
    }
}

/// Below this many subscribers a node finds a key by linear scan; above it, by an index map.
const INDEX_THRESHOLD: usize = 16;

/// The subscribers at one node: a dense vector (fast fan-out) plus, when large, an index from key
/// to position (O(1) insert and remove among many subscribers).
#[derive(Debug)]
struct Subscribers<K, V> {
    entries: Vec<(K, V)>,
    /// Empty when not indexed; otherwise maps every key in `entries` to its position.
    index: HashMap<K, usize>,
}

impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<K, V> Subscribers<K, V> {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn for_each(&self, f: &mut impl FnMut(&K, &V)) {
        for (key, value) in &self.entries {
            f(key, value);
        }
    }
}

impl<K: Clone + Eq + Hash, V> Subscribers<K, V> {
    fn position(&self, key: &K) -> Option<usize> {
        if self.index.is_empty() {
            self.entries.iter().position(|(k, _)| k == key)
        } else {
            self.index.get(key).copied()
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(&key) {
            return Some(mem::replace(&mut self.entries[i].1, value));
        }
        if !self.index.is_empty() {
            self.index.insert(key.clone(), self.entries.len());
        }
        self.entries.push((key, value));
        if self.index.is_empty() && self.entries.len() > INDEX_THRESHOLD {
            self.index = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
        }
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.position(key)?;
        let (_, value) = self.entries.swap_remove(i);
        if !self.index.is_empty() {
            self.index.remove(key);
            if let Some((moved, _)) = self.entries.get(i) {
                self.index.insert(moved.clone(), i);
            }
            if self.entries.len() < INDEX_THRESHOLD / 2 {
                self.index = HashMap::new();
            } else if self.index.capacity() > 4 * self.index.len() {
                self.index.shrink_to(2 * self.index.len());
            }
        }
        if self.entries.capacity() > 8 && self.entries.capacity() > 4 * self.entries.len() {
            self.entries.shrink_to(2 * self.entries.len());
        }
        Some(value)
    }
}

/// Inline slots in [`WalkStack`] before it spills to the heap.
const WALK_INLINE: usize = 16;

/// A LIFO stack that holds its first [`WALK_INLINE`] items without allocating.
struct WalkStack<T> {
    inline: [T; WALK_INLINE],
    inline_len: usize,
    spill: Vec<T>,
}

impl<T: Copy> WalkStack<T> {
    /// An empty stack; `filler` only initialises the unused slots.
    fn new(filler: T) -> Self {
        Self {
            inline: [filler; WALK_INLINE],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, item: T) {
        if self.inline_len < WALK_INLINE {
            self.inline[self.inline_len] = item;
            self.inline_len += 1;
        } else {
            self.spill.push(item);
        }
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        if self.inline_len == 0 {
            return None;
        }
        self.inline_len -= 1;
        Some(self.inline[self.inline_len])
    }
}

#[cfg(test)]
mod tests {
    use super::super::matches;
    use super::super::test_support::{EDGE_FILTERS, EDGE_TOPICS, XorShift, gen_filter, gen_topic};
    use super::*;

    /// (key, filter) pairs the trie reports for `topic`, sorted. Values are the filters.
    fn trie_matches(trie: &SubscriptionTrie<u32, String>, topic: &str) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |k, v| out.push((*k, v.clone())));
        out.sort();
        out
    }

    fn brute_matches(subs: &[(u32, String)], topic: &str) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = subs
            .iter()
            .filter(|(_, filter)| matches(filter, topic))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Number of nodes, the root included.
    fn node_count<K, V>(trie: &SubscriptionTrie<K, V>) -> usize {
        let mut count = 0;
        let mut pending = vec![&trie.root];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.children.values());
            pending.extend(node.plus.as_deref());
            pending.extend(node.hash.as_deref());
        }
        count
    }

    fn reported(trie: &SubscriptionTrie<&'static str, u8>, topic: &str) -> Vec<(&'static str, u8)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |k, v| out.push((*k, *v)));
        out.sort();
        out
    }

    #[test]
    fn empty_trie() {
        let trie: SubscriptionTrie<u32, u8> = SubscriptionTrie::new();
        assert!(trie.is_empty());
        assert_eq!(trie.len(), 0);
        trie.for_each_match("a", |_, _| panic!("nothing to match"));
        trie.for_each_match("$SYS", |_, _| panic!("nothing to match"));
    }

    #[test]
    fn insert_replace_get() {
        let mut trie = SubscriptionTrie::new();
        assert_eq!(trie.insert("a/+", "c1", 1), None);
        assert_eq!(trie.insert("a/b", "c1", 0), None);
        assert_eq!(trie.insert("a/+", "c2", 2), None);
        assert_eq!(trie.len(), 3);
        // MQTT-3.8.4-3: the same filter from the same client replaces the subscription.
        assert_eq!(trie.insert("a/+", "c1", 2), Some(1));
        assert_eq!(trie.len(), 3);
        assert_eq!(trie.get("a/+", &"c1"), Some(&2));
        assert_eq!(trie.get("a/b", &"c1"), Some(&0));
        assert_eq!(trie.get("a/b", &"c2"), None);
        assert_eq!(trie.get("a", &"c1"), None);
        assert_eq!(trie.get("a/c", &"c1"), None);
    }

    #[test]
    fn overlapping_subscriptions_reported_per_filter() {
        // MQTT-3.3.5-1: the broker merges overlapping subscriptions, so the trie reports each.
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/+", "c1", 1);
        trie.insert("a/#", "c1", 2);
        trie.insert("#", "c1", 0);
        trie.insert("a/b", "c2", 1);
        trie.insert("a/c", "c2", 1);
        assert_eq!(
            reported(&trie, "a/b"),
            vec![("c1", 0), ("c1", 1), ("c1", 2), ("c2", 1)]
        );
        assert_eq!(reported(&trie, "a"), vec![("c1", 0), ("c1", 2)]);
        assert_eq!(reported(&trie, "b"), vec![("c1", 0)]);
    }

    #[test]
    fn dollar_topics() {
        // MQTT-4.7.2-1: filters starting with a wildcard do not match `$` topics.
        let mut trie = SubscriptionTrie::new();
        trie.insert("#", "all", 0);
        trie.insert("+/monitor/Clients", "plus", 0);
        trie.insert("+/#", "plushash", 0);
        trie.insert("$SYS/#", "sys", 0);
        trie.insert("$SYS/monitor/+", "sysplus", 0);
        assert_eq!(
            reported(&trie, "$SYS/monitor/Clients"),
            vec![("sys", 0), ("sysplus", 0)]
        );
        assert_eq!(reported(&trie, "$SYS"), vec![("sys", 0)]);
        assert_eq!(
            reported(&trie, "x/monitor/Clients"),
            vec![("all", 0), ("plus", 0), ("plushash", 0)]
        );
        assert_eq!(reported(&trie, "$"), vec![]);
        assert_eq!(reported(&trie, "a/$SYS"), vec![("all", 0), ("plushash", 0)]);
    }

    #[test]
    fn remove_is_literal_and_prunes() {
        let mut trie = SubscriptionTrie::new();
        let base = node_count(&trie);
        trie.insert("a/b/c", 1u32, ());
        trie.insert("a/+/c", 1, ());
        trie.insert("a/#", 2, ());
        trie.insert("a", 3, ());
        assert_eq!(trie.len(), 4);
        // MQTT-3.10.4-1: filters in UNSUBSCRIBE are compared character by character.
        assert_eq!(trie.remove("a/+/+", &1), None);
        assert_eq!(trie.remove("a/b/+", &1), None);
        assert_eq!(trie.remove("a/b/c", &2), None);
        assert_eq!(trie.remove("a/b/c/d", &1), None);
        assert_eq!(trie.remove("a/b", &1), None);
        assert_eq!(trie.len(), 4);
        assert_eq!(trie.remove("a/+/c", &1), Some(()));
        assert_eq!(trie.remove("a/+/c", &1), None);
        assert_eq!(trie.len(), 3);
        assert!(trie.root.children["a"].plus.is_none());
        // `a` has a subscriber and children; removing the deeper filters keeps it.
        assert_eq!(trie.remove("a/b/c", &1), Some(()));
        assert!(trie.root.children["a"].children.is_empty());
        assert_eq!(trie.remove("a/#", &2), Some(()));
        assert_eq!(node_count(&trie), base + 1);
        assert_eq!(trie.remove("a", &3), Some(()));
        assert_eq!(node_count(&trie), base);
        assert!(trie.is_empty());
    }

    #[test]
    fn remove_keeps_shared_prefix() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c/d", 1u32, ());
        trie.insert("a/b/x", 1, ());
        trie.insert("a/b/c/d", 2, ());
        assert_eq!(node_count(&trie), 6);
        trie.remove("a/b/c/d", &1);
        assert_eq!(node_count(&trie), 6, "another subscriber remains");
        trie.remove("a/b/c/d", &2);
        assert_eq!(node_count(&trie), 4, "c and d pruned, a/b/x kept");
        let mut hits = 0;
        trie.for_each_match("a/b/x", |_, _| hits += 1);
        assert_eq!(hits, 1);
        trie.remove("a/b/x", &1);
        assert_eq!(node_count(&trie), 1);
    }

    #[test]
    fn many_subscribers_on_one_filter() {
        const N: u32 = 10_000;
        let mut trie = SubscriptionTrie::new();
        for key in 0..N {
            assert_eq!(trie.insert("fan/out", key, key), None);
        }
        assert_eq!(trie.insert("fan/out", 7, 70), Some(7));
        assert_eq!(trie.len(), N as usize);
        let mut sum = 0u64;
        trie.for_each_match("fan/out", |k, v| {
            assert!(*k == *v || (*k == 7 && *v == 70));
            sum += u64::from(*k);
        });
        assert_eq!(sum, u64::from(N) * u64::from(N - 1) / 2);
        // Remove in a scrambled order and check the index stays consistent.
        let mut rng = XorShift::new(99);
        let mut keys: Vec<u32> = (0..N).collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.below(i + 1));
        }
        for (removed, key) in keys.iter().enumerate() {
            let expected = if *key == 7 { 70 } else { *key };
            assert_eq!(trie.remove("fan/out", key), Some(expected));
            if removed % 997 == 0 {
                for other in &keys[removed + 1..] {
                    assert!(trie.get("fan/out", other).is_some());
                }
            }
        }
        assert!(trie.is_empty());
        assert_eq!(node_count(&trie), 1);
    }

    #[test]
    fn subscribers_index_transitions() {
        let mut subs: Subscribers<u32, u32> = Subscribers::default();
        for round in 0..3 {
            for k in 0..100 {
                assert_eq!(subs.insert(k, k + round), None);
            }
            assert!(!subs.index.is_empty());
            for k in (0..100).step_by(2) {
                assert_eq!(subs.remove(&k), Some(k + round));
            }
            for k in 0..100 {
                assert_eq!(subs.get(&k).copied(), (k % 2 == 1).then_some(k + round));
            }
            for k in (1..100).step_by(2) {
                assert_eq!(subs.remove(&k), Some(k + round));
            }
            assert!(subs.is_empty());
            assert!(subs.index.is_empty());
            assert!(subs.entries.capacity() <= 8);
        }
    }

    #[test]
    fn cross_check_against_matches() {
        let mut rng = XorShift::new(0x5EED_1234);
        let mut filters: Vec<String> = EDGE_FILTERS.iter().map(|f| f.to_string()).collect();
        filters.extend((0..400).map(|_| gen_filter(&mut rng)));
        let mut topics: Vec<String> = EDGE_TOPICS.iter().map(|t| t.to_string()).collect();
        topics.extend((0..600).map(|_| gen_topic(&mut rng)));

        let mut trie = SubscriptionTrie::new();
        let mut subs: Vec<(u32, String)> = Vec::new();
        for filter in &filters {
            // Several keys per filter; key collisions on duplicate filters exercise replace.
            for _ in 0..1 + rng.below(3) {
                let key = rng.below(8) as u32;
                let replaced = trie.insert(filter, key, filter.clone());
                let existing = subs.iter().any(|(k, f)| *k == key && f == filter);
                assert_eq!(replaced.is_some(), existing, "{filter} {key}");
                if !existing {
                    subs.push((key, filter.clone()));
                }
            }
        }
        assert_eq!(trie.len(), subs.len());
        // The generated sets must exercise real matches, including `$` topics and `#`.
        let total: usize = topics.iter().map(|t| brute_matches(&subs, t).len()).sum();
        let dollar: usize = topics
            .iter()
            .filter(|t| t.starts_with('$'))
            .map(|t| brute_matches(&subs, t).len())
            .sum();
        assert!(
            total > 2_000 && dollar > 20,
            "total {total}, dollar {dollar}"
        );
        let check = |trie: &SubscriptionTrie<u32, String>, subs: &[(u32, String)]| {
            for topic in &topics {
                assert_eq!(
                    trie_matches(trie, topic),
                    brute_matches(subs, topic),
                    "{topic}"
                );
            }
        };
        check(&trie, &subs);

        // Remove about half, in generated order, and check again.
        let mut kept = Vec::new();
        for (key, filter) in subs {
            if rng.below(2) == 0 {
                assert_eq!(trie.remove(&filter, &key), Some(filter.clone()));
                assert_eq!(trie.remove(&filter, &key), None);
            } else {
                kept.push((key, filter));
            }
        }
        assert_eq!(trie.len(), kept.len());
        check(&trie, &kept);

        // Remove the rest: everything is pruned.
        for (key, filter) in &kept {
            assert_eq!(trie.remove(filter, key).as_ref(), Some(filter));
        }
        assert!(trie.is_empty());
        assert_eq!(node_count(&trie), 1);
        check(&trie, &[]);
    }

    #[test]
    fn many_plus_branches_spill_the_walk_stack() {
        // 2^6 = 64 matching paths with 6 pending `+` branches at the deepest point, and a
        // 40-level all-`+` filter with a literal twin at each level, exceed the inline slots.
        let mut trie = SubscriptionTrie::new();
        let mut subs = Vec::new();
        let mut rng = XorShift::new(7);
        for i in 0..64u32 {
            let filter: Vec<&str> = (0..6)
                .map(|bit| if i >> bit & 1 == 1 { "+" } else { "x" })
                .collect();
            let filter = filter.join("/");
            trie.insert(&filter, i, filter.clone());
            subs.push((i, filter));
        }
        let deep_plus = vec!["+"; 40].join("/");
        trie.insert(&deep_plus, 100, deep_plus.clone());
        subs.push((100, deep_plus));
        for depth in 1..=40 {
            let literal = vec!["x"; depth].join("/");
            trie.insert(&literal, 200, literal.clone());
            subs.push((200, literal));
        }
        // 20-level filters with `+` at one position each: walking `x/x/.../x` leaves a `+`
        // branch pending at each of the 20 levels.
        for k in 0..20 {
            let filter: Vec<&str> = (0..20).map(|i| if i == k { "+" } else { "x" }).collect();
            let filter = filter.join("/");
            trie.insert(&filter, 300 + k, filter.clone());
            subs.push((300 + k, filter));
        }
        let x20 = vec!["x"; 20].join("/");
        let mut count = 0;
        trie.for_each_match(&x20, |_, _| count += 1);
        assert_eq!(count, 21, "twenty one-`+` filters and the literal `x`*20");
        for topic in ["x/x/x/x/x/x", "x/y/x/y/x/y", &x20, &vec!["x"; 40].join("/")] {
            assert_eq!(trie_matches(&trie, topic), brute_matches(&subs, topic));
        }
        for _ in 0..50 {
            let topic = gen_topic(&mut rng);
            assert_eq!(trie_matches(&trie, &topic), brute_matches(&subs, &topic));
        }
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        // A 65535-byte filter can have 32768 levels; nothing may recurse per level.
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let deep = "/".repeat(60_000);
                let deep_plus = vec!["+"; 30_000].join("/");
                let mut trie = SubscriptionTrie::new();
                trie.insert(&deep, 1u32, ());
                trie.insert(&deep_plus, 2, ());
                trie.insert(&format!("{deep}/#"), 3, ());
                let mut hits = Vec::new();
                trie.for_each_match(&deep, |k, _| hits.push(*k));
                hits.sort();
                assert_eq!(hits, vec![1, 3]);
                assert_eq!(trie.remove(&deep, &1), Some(()));
                assert_eq!(trie.remove(&deep_plus, &2), Some(()));
                // Dropping the trie with the remaining deep filter must not recurse either.
                drop(trie);
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
    }
}
