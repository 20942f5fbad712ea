//! Listeners and the per-connection task.

pub(crate) mod conn;
pub mod fds;
pub(crate) mod listener;
pub(crate) mod park;
pub(crate) mod tls;
pub(crate) mod ws;
