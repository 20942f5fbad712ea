//! Whether clients without a username may connect.

use std::net::IpAddr;

/// Whether anonymous clients (CONNECT without a username) are allowed.
///
/// An explicit setting (`allow_anonymous` in the config) always wins. Without one, anonymous
/// access is allowed only if every listener is bound to a loopback address (127.0.0.0/8,
/// `::1`, or IPv4-mapped loopback), so that a broker reachable from the network is closed by
/// default. This follows the intent of mosquitto 2.0, which made `allow_anonymous` default to
/// false and, with no listener configured, listens on the loopback interface only while
/// allowing anonymous clients there. With no listener at all the answer is false.
pub(crate) fn anonymous_allowed(explicit: Option<bool>, listener_addrs: &[IpAddr]) -> bool {
    explicit.unwrap_or_else(|| {
        !listener_addrs.is_empty()
            && listener_addrs
                .iter()
                .all(|addr| addr.to_canonical().is_loopback())
    })
}
