//! The retained index: retained messages by topic name, found by topic filter.

use std::collections::HashMap;

use super::split_level;

/// Values (retained messages) keyed by topic name, organised by topic level so that the topics
/// matching a filter are found by walking the filter's levels rather than scanning every topic.
///
/// Topics are stored and compared byte for byte (MQTT-4.7.3-4). Matching follows exactly the
/// rules of [`super::matches`]. Nothing recurses, so very deep topics cannot overflow the stack,
/// and removing a topic prunes the levels only it used.
#[derive(Debug)]
pub(crate) struct RetainedIndex<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V> RetainedIndex<V> {
    /// An empty index. Does not allocate.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Stores `value` for the topic name `topic`, returning the value it replaces, if any
    /// (a new retained message replaces the one stored for that topic).
    pub(crate) fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            // Look up before inserting so an existing level costs no allocation.
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), Node::default());
            }
            node = node
                .children
                .get_mut(level)
                .expect("child exists: just checked or inserted");
        }
        match &mut node.entry {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                node.entry = Some((topic.into(), value));
                self.len += 1;
                None
            }
        }
    }

    /// Removes and returns the value stored for `topic`, if any. Levels left without a value
    /// or children are removed.
    pub(crate) fn remove(&mut self, topic: &str) -> Option<V> {
        // Pass 1, read-only: find the node, and the deepest node on the path that stays anyway
        // (it has a value or another child, or is the root).
        let mut node = &self.root;
        let mut keep_depth = 0;
        for (depth, level) in topic.split('/').enumerate() {
            if depth == 0 || node.entry.is_some() || node.children.len() > 1 {
                keep_depth = depth;
            }
            node = node.children.get(level)?;
        }
        node.entry.as_ref()?;
        let prune = node.children.is_empty();

        // Pass 2: take the value.
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let (_, value) = node.entry.take()?;
        self.len -= 1;

        // Pass 3: cut the branch that is now empty.
        if prune {
            let mut levels = topic.split('/');
            let mut node = &mut self.root;
            for level in levels.by_ref().take(keep_depth) {
                node = node.children.get_mut(level)?;
            }
            let cut = levels.next()?;
            drop(node.children.remove(cut));
        }
        Some(value)
    }

    /// The value stored for exactly the topic name `topic`, if any.
    #[cfg(test)]
    pub(crate) fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.entry.as_ref().map(|(_, value)| value)
    }

    /// Calls `f` with the topic and value of every stored topic that the topic filter `filter`
    /// matches, following the rules of [`super::matches`] (including MQTT-4.7.2-1: a filter
    /// starting with `+` or `#` does not visit topics starting with `$`).
    ///
    /// Walks the filter's levels: literal levels are looked up, `+` visits every child, `#`
    /// visits the whole subtree. The order of calls is unspecified.
    pub(crate) fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let mut walk: Vec<(&Node<V>, Option<&str>)> = Vec::new();
        let mut subtrees: Vec<&Node<V>> = Vec::new();
        Self::step(
            &self.root,
            Some(filter),
            true,
            &mut walk,
            &mut subtrees,
            &mut f,
        );
        while let Some((node, rest)) = walk.pop() {
            Self::step(node, rest, false, &mut walk, &mut subtrees, &mut f);
        }
        while let Some(node) = subtrees.pop() {
            node.visit(&mut f);
            subtrees.extend(node.children.values());
        }
    }

    /// Calls `f` with the topic and value of every stored topic, `$` topics included, in
    /// unspecified order (e.g. to find expired retained messages).
    #[cfg(test)]
    pub(crate) fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            node.visit(&mut f);
            pending.extend(node.children.values());
        }
    }

    /// The number of stored topics.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True if no topic is stored.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One step of [`Self::for_each_match`]: `node` matched the filter so far and `rest` is the
    /// rest of the filter (`None`: the filter ended at `node`). Visits `node` if it matches and
    /// queues the children to continue with in `walk`, or whole subtrees for a `#` in
    /// `subtrees`. `at_root` applies MQTT-4.7.2-1 to the first level.
    fn step<'a, 'f>(
        node: &'a Node<V>,
        rest: Option<&'f str>,
        at_root: bool,
        walk: &mut Vec<(&'a Node<V>, Option<&'f str>)>,
        subtrees: &mut Vec<&'a Node<V>>,
        f: &mut impl FnMut(&str, &V),
    ) {
        let Some(rest) = rest else {
            node.visit(f);
            return;
        };
        let wildcard_children = || {
            node.children
                .iter()
                .filter(move |(level, _)| !(at_root && level.starts_with('$')))
                .map(|(_, child)| child)
        };
        match split_level(rest) {
            // `#` as the last level matches the parent (this node) and every descendant. A `#`
            // that is not the last level (an invalid filter) matches nothing.
            ("#", None) => {
                node.visit(f);
                subtrees.extend(wildcard_children());
            }
            ("#", Some(_)) => {}
            ("+", next) => walk.extend(wildcard_children().map(|child| (child, next))),
            (level, next) => walk.extend(node.children.get(level).map(|child| (child, next))),
        }
    }
}

/// One topic level. The root stands for no level and never holds a value.
#[derive(Debug)]
struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    /// The full topic name ending at this level, and its value.
    entry: Option<(Box<str>, V)>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            entry: None,
        }
    }
}

impl<V> Node<V> {
    fn visit(&self, f: &mut impl FnMut(&str, &V)) {
        if let Some((topic, value)) = &self.entry {
            f(topic, value);
        }
    }
}

impl<V> Drop for Node<V> {
    /// Drops the subtree iteratively: the default recursive drop could overflow the stack on a
    /// topic with tens of thousands of levels.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending: Vec<Node<V>> = self.children.drain().map(|(_, child)| child).collect();
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, child)| child));
            // `node` now has no children; dropping it here does not recurse.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::matches;
    use super::super::test_support::{EDGE_FILTERS, EDGE_TOPICS, XorShift, gen_filter, gen_topic};
    use super::*;

    fn visited<V: Clone>(index: &RetainedIndex<V>, filter: &str) -> Vec<(String, V)> {
        let mut out = Vec::new();
        index.for_each_match(filter, |topic, value| {
            out.push((topic.to_string(), value.clone()))
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn topics_matching(index: &RetainedIndex<u32>, filter: &str) -> Vec<String> {
        visited(index, filter).into_iter().map(|(t, _)| t).collect()
    }

    /// Number of nodes, the root included.
    fn node_count<V>(index: &RetainedIndex<V>) -> usize {
        let mut count = 0;
        let mut pending = vec![&index.root];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.children.values());
        }
        count
    }

    #[test]
    fn empty_index() {
        let index: RetainedIndex<u32> = RetainedIndex::new();
        assert!(index.is_empty());
        assert_eq!(index.len(), 0);
        assert_eq!(index.get("a"), None);
        index.for_each_match("#", |_, _| panic!("nothing stored"));
    }

    #[test]
    fn insert_replace_get_remove() {
        let mut index = RetainedIndex::new();
        assert_eq!(index.insert("a/b", 1), None);
        assert_eq!(index.insert("a", 2), None);
        assert_eq!(index.insert("a/b", 3), Some(1));
        assert_eq!(index.len(), 2);
        assert_eq!(index.get("a/b"), Some(&3));
        assert_eq!(index.get("a"), Some(&2));
        assert_eq!(index.get("a/"), None);
        assert_eq!(index.get("a/b/c"), None);
        assert_eq!(index.remove("a/b/c"), None);
        assert_eq!(index.remove("a/"), None);
        assert_eq!(index.remove("a"), Some(2));
        assert_eq!(index.remove("a"), None);
        assert_eq!(index.len(), 1);
        assert_eq!(index.get("a/b"), Some(&3));
        assert_eq!(index.remove("a/b"), Some(3));
        assert!(index.is_empty());
        assert_eq!(node_count(&index), 1);
    }

    #[test]
    fn pruning_keeps_what_is_still_used() {
        let mut index = RetainedIndex::new();
        index.insert("a/b/c/d", 1);
        index.insert("a/b/x", 2);
        index.insert("a", 3);
        assert_eq!(node_count(&index), 6);
        index.remove("a/b/c/d");
        assert_eq!(node_count(&index), 4, "c and d pruned");
        index.remove("a");
        assert_eq!(node_count(&index), 4, "a still leads to a/b/x");
        assert_eq!(topics_matching(&index, "#"), vec!["a/b/x"]);
        index.remove("a/b/x");
        assert_eq!(node_count(&index), 1);
        // A topic that is a prefix of another keeps the longer one's nodes.
        index.insert("p", 1);
        index.insert("p/q", 2);
        index.remove("p");
        assert_eq!(node_count(&index), 3);
        assert_eq!(index.get("p/q"), Some(&2));
    }

    #[test]
    fn spec_examples() {
        let mut index = RetainedIndex::new();
        for (i, topic) in [
            "sport",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "sport/",
            "/finance",
            "$SYS/monitor/Clients",
            "$SYS",
        ]
        .into_iter()
        .enumerate()
        {
            index.insert(topic, i as u32);
        }
        // MQTT-4.7.1-2: `#` matches the parent level and any number of children.
        assert_eq!(
            topics_matching(&index, "sport/tennis/player1/#"),
            vec![
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(topics_matching(&index, "sport/#").len(), 6);
        // MQTT-4.7.1-3: `+` matches exactly one level, possibly empty.
        assert_eq!(
            topics_matching(&index, "sport/tennis/+"),
            vec!["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(topics_matching(&index, "sport/+"), vec!["sport/"]);
        assert_eq!(topics_matching(&index, "+"), vec!["sport"]);
        assert_eq!(topics_matching(&index, "+/+"), vec!["/finance", "sport/"]);
        assert_eq!(topics_matching(&index, "/+"), vec!["/finance"]);
        // MQTT-4.7.2-1: no `$` topics for filters starting with a wildcard.
        assert_eq!(
            topics_matching(&index, "+/monitor/Clients"),
            Vec::<String>::new()
        );
        assert!(
            !topics_matching(&index, "#")
                .iter()
                .any(|t| t.starts_with('$'))
        );
        assert_eq!(topics_matching(&index, "#").len(), 7);
        assert_eq!(
            topics_matching(&index, "$SYS/#"),
            vec!["$SYS", "$SYS/monitor/Clients"]
        );
        assert_eq!(
            topics_matching(&index, "$SYS/monitor/+"),
            vec!["$SYS/monitor/Clients"]
        );
        // Literal filters find exactly their topic.
        assert_eq!(topics_matching(&index, "sport"), vec!["sport"]);
        assert_eq!(
            visited(&index, "sport/tennis/player2"),
            vec![("sport/tennis/player2".into(), 4)]
        );
        let mut all = 0;
        index.for_each(|_, _| all += 1);
        assert_eq!(all, 9);
    }

    #[test]
    fn cross_check_against_matches() {
        let mut rng = XorShift::new(0xC0FF_EE00);
        let mut topics: Vec<String> = EDGE_TOPICS.iter().map(|t| t.to_string()).collect();
        topics.extend((0..500).map(|_| gen_topic(&mut rng)));
        let mut filters: Vec<String> = EDGE_FILTERS.iter().map(|f| f.to_string()).collect();
        filters.extend((0..500).map(|_| gen_filter(&mut rng)));

        let mut index = RetainedIndex::new();
        let mut stored: Vec<String> = Vec::new();
        for topic in &topics {
            let replaced = index.insert(topic, topic.clone());
            assert_eq!(replaced.is_some(), stored.contains(topic), "{topic}");
            if replaced.is_none() {
                stored.push(topic.clone());
            }
        }
        assert_eq!(index.len(), stored.len());
        // The generated sets must exercise real matches, including `$` topics.
        let pairs = |pred: &dyn Fn(&str) -> bool| -> usize {
            filters
                .iter()
                .map(|f| stored.iter().filter(|t| pred(t) && matches(f, t)).count())
                .sum()
        };
        let (total, dollar) = (pairs(&|_| true), pairs(&|t| t.starts_with('$')));
        assert!(
            total > 2_000 && dollar > 20,
            "total {total}, dollar {dollar}"
        );
        let check = |index: &RetainedIndex<String>, stored: &[String]| {
            for filter in &filters {
                let mut got = Vec::new();
                index.for_each_match(filter, |topic, value| {
                    assert_eq!(topic, value);
                    got.push(topic.to_string());
                });
                got.sort();
                let mut expected: Vec<String> = stored
                    .iter()
                    .filter(|topic| matches(filter, topic))
                    .cloned()
                    .collect();
                expected.sort();
                assert_eq!(got, expected, "{filter}");
            }
            for topic in stored {
                assert_eq!(index.get(topic), Some(topic));
            }
        };
        check(&index, &stored);

        let mut kept = Vec::new();
        for topic in stored {
            if rng.below(2) == 0 {
                assert_eq!(index.remove(&topic).as_ref(), Some(&topic));
                assert_eq!(index.get(&topic), None);
            } else {
                kept.push(topic);
            }
        }
        assert_eq!(index.len(), kept.len());
        check(&index, &kept);

        for topic in &kept {
            assert_eq!(index.remove(topic).as_ref(), Some(topic));
        }
        assert!(index.is_empty());
        assert_eq!(node_count(&index), 1);
        check(&index, &[]);
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let deep = "/".repeat(60_000);
                let mut index = RetainedIndex::new();
                index.insert(&deep, 1u32);
                index.insert(&format!("{deep}x"), 2);
                let mut hits = 0;
                index.for_each_match("#", |_, _| hits += 1);
                assert_eq!(hits, 2);
                let deep_plus = vec!["+"; 60_001].join("/");
                hits = 0;
                index.for_each_match(&deep_plus, |_, _| hits += 1);
                assert_eq!(hits, 2);
                assert_eq!(index.remove(&deep), Some(1));
                assert_eq!(index.get(&format!("{deep}x")), Some(&2));
                drop(index);
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
    }
}
