//! Shared pieces of the fuzz targets in `fuzz_targets/`: reading the fuzzer's input, the broker
//! decoder in each of its states with a checked decode loop, and a hostile server for
//! `roost-client`.
//!
//! The targets panic (through `assert!`) on any broken invariant; that is how libFuzzer sees a
//! finding.

pub mod decoding;
pub mod exec;
pub mod hostile;
pub mod input;
pub mod ledger;
