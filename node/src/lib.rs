//! The Cairn node: HTTP API over the shard store, the put/get pipelines, and the client the
//! command line uses. The binary (`cairn`) is `main.rs` + `cli.rs`.

pub mod api;
pub mod chain;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod private_file;
pub mod repair;
pub mod safetensors;
pub mod sample;
pub mod scrub;
pub mod worker;
