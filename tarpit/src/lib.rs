//! tarpit: a Linux-native HTTP tarpit for internet-facing sensors.
//!
//! Data flows one way: socket → request → event → sinks. Start reading at [`server`] (the
//! io_uring workers and the per-connection drip), then [`event`] (what is recorded), then
//! [`pipeline`] and [`sink`] (where it goes). `ARCHITECTURE.md` at the repository root maps the
//! modules.

#![warn(missing_docs)]

pub mod abuseipdb;
pub mod adaptive;
pub mod address_text;
pub mod analysis;
pub mod attribution;
pub mod canary;
pub mod classify;
pub mod cli;
pub mod config;
pub mod db;
pub mod ebpf;
pub mod error_chain;
pub mod event;
pub mod file_modes;
pub mod fingerprint;
pub mod geoip;
pub mod http;
pub mod log_throttle;
pub mod metrics;
pub mod net_class;
pub mod pipeline;
pub mod privileges;
pub mod queue;
pub mod scanner;
pub mod seccomp;
pub mod secret;
pub mod server;
pub mod share;
pub mod ship;
pub mod sink;
pub mod steer;
