//! The dashboard page rendered by a real headless browser (Debian's `chromium`): it shows live
//! numbers from a running broker. Skipped with a notice when chromium is not installed, unless
//! `ROOST_BROWSER=require` (CI sets it and installs chromium).

mod common;

use std::process::Stdio;

use common::*;
use roost::codec::{Packet, QoS, Version};
use roost::config::HttpConfig;

/// The browser to use, if one is installed.
fn browser() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        if std::env::var("ROOST_BROWSER").as_deref() == Ok("require") {
            panic!("chromium is required (ROOST_BROWSER=require)");
        }
        eprintln!("NOTICE: chromium not installed; dashboard test skipped");
    }
    found
}

/// The page's DOM after its scripts ran, as chromium renders it.
async fn render(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("chromium finishes in time")
        .expect("chromium output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in `dom`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let after = dom
        .split(&marker)
        .nth(1)
        .unwrap_or_else(|| panic!("#{id} in\n{dom}"));
    let start = after.find('>').map_or(0, |i| i + 1);
    let rest = &after[start..];
    &rest[..rest.find('<').unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_numbers_in_a_real_browser() {
    let Some(browser) = browser() else {
        return;
    };
    let broker =
        start_broker_with(|c| c.http = Some(HttpConfig::new([127, 0, 0, 1].into(), 0))).await;
    let addr = broker.local_addr();
    // Two clients connected, and a durable session away with three messages waiting.
    let mut away = connect_packet(Version::V311, "backlogged-device");
    away.clean_start = false;
    let (mut c, _) = RawClient::connect(addr, away).await;
    c.send(&subscribe("cmd/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(&Packet::Disconnect(Default::default())).await;
    wait_detached(&broker, "backlogged-device").await;
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, "operator")).await;
    for i in 1..=3u16 {
        p.send(&publish("cmd/reboot", QoS::AtLeastOnce, i, b"now"))
            .await;
        assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    }
    let (_other, _) = RawClient::connect(addr, connect_packet(Version::V311, "watcher")).await;

    let url = format!("http://{}/", broker.http_addr().expect("http"));
    let dom = render(browser, &url).await;
    assert_eq!(text_of(&dom, "error"), "", "no error shown");
    assert_eq!(text_of(&dom, "version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(text_of(&dom, "connected"), "2");
    assert_eq!(text_of(&dom, "sessions"), "3");
    assert_eq!(text_of(&dom, "backlog"), "3");
    assert_eq!(text_of(&dom, "store-health"), "in memory");
    assert_ne!(text_of(&dom, "updated"), "never");
    let busiest = dom.split("id=\"busiest\"").nth(1).unwrap_or_default();
    let (deep, idle) = (busiest.find("backlogged-device"), busiest.find("watcher"));
    assert!(
        deep.is_some() && idle.is_some() && deep < idle,
        "the deepest backlog first:\n{busiest}"
    );
    broker.shutdown().await;
}
