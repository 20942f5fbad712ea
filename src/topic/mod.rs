//! Topic names and filters: validation, matching, the subscription trie and the retained index.

/// True if `name` is a valid topic name for PUBLISH: at least one byte, no wildcard characters
/// and no U+0000 (MQTT-4.7.3-1, MQTT-4.7.3-2, MQTT-3.3.2-2).
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty() && !name.bytes().any(|b| b == b'+' || b == b'#' || b == 0)
}

/// True if `filter` is a valid topic filter: at least one byte, no U+0000, `+` only as a whole
/// level and `#` only as the whole last level (MQTT-4.7.1-2, MQTT-4.7.1-3, MQTT-4.7.3-1).
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.as_bytes().contains(&0) {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}
