//! The default for anonymous access.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::auth::anonymous_allowed;

#[test]
fn loopback_only_allows_anonymous_by_default() {
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let other_v4_loopback = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert!(anonymous_allowed(
        None,
        &[v4, v6, other_v4_loopback, mapped]
    ));
}

#[test]
fn any_network_listener_closes_anonymous_by_default() {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let lan = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    assert!(!anonymous_allowed(None, &[loopback, any]));
    assert!(!anonymous_allowed(None, &[any6]));
    assert!(!anonymous_allowed(None, &[lan]));
    assert!(!anonymous_allowed(None, &[]));
}

#[test]
fn explicit_setting_wins() {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert!(anonymous_allowed(Some(true), &[any]));
    assert!(!anonymous_allowed(Some(false), &[loopback]));
    assert!(anonymous_allowed(Some(true), &[]));
}
