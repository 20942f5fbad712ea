//! The broker's own counters and gauges, read from its HTTP listener (`GET /metrics`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Unlabelled series of the Prometheus text at `/metrics`, by name (`roost_sessions`, ...).
pub fn scrape(http: SocketAddr) -> Result<BTreeMap<String, f64>, String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let body = agent
        .get(format!("http://{http}/metrics"))
        .call()
        .map_err(|e| format!("GET /metrics: {e}"))?
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading /metrics: {e}"))?;
    Ok(parse(&body))
}

/// The unlabelled samples of a Prometheus text exposition.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unlabelled_samples_only() {
        let text = "# HELP roost_sessions Sessions\n# TYPE roost_sessions gauge\n\
                    roost_sessions 12\nroost_store_reads_total 3\n\
                    roost_listener_clients_connected{listener=\"tcp\"} 4\n# EOF\n";
        let m = super::parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["roost_sessions"], 12.0);
        assert_eq!(m["roost_store_reads_total"], 3.0);
    }
}
