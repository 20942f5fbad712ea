//! Unit tests of the auth module, one file per source file. No network, no sleeping.

mod acl;
mod anonymous;
mod mosquitto_hash;
mod passwd_cmd;
mod password;
mod throttle;
