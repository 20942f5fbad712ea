//! roost-client: a `no_std`, no-alloc MQTT client.
#![no_std]
#![forbid(unsafe_code)]
