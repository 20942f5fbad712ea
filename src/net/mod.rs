//! Listeners and the per-connection task.

pub mod conn;
pub mod listener;
pub mod tls;
pub mod ws;
