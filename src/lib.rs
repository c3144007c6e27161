//! flotilla keeps the add-ons of a fleet of Kubernetes clusters in the state a Git repository
//! declares. Data flows one way: source → config → classify → plan → render → apply → report.
//! The pure modules (`config`, `select`, `classify`, `render`'s sandbox) take values and return
//! values; the adapters (`source`'s directory reader, `cluster`) do the I/O and stay thin.

pub mod binary;
pub mod classify;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod drift;
pub mod git;
pub mod helm;
pub mod plan;
pub mod render;
pub mod report;
pub mod review;
pub mod select;
pub mod serve;
pub mod shard;
pub mod source;
