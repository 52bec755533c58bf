//! Custos: an on-premises remote-support appliance that keeps every session as encrypted,
//! tamper-evident evidence.
//!
//! # Layout
//!
//! Dependencies point down this list; nothing lower reaches up.
//!
//! - `app`: wires everything together: the data directory, first-start initialization, the
//!   server's lifecycle (start, seal and unseal, ordered shutdown).
//! - `cli`: the `custos` command line, turned into validated requests for `app`.
//! - `web`: HTTP (axum over hyper and rustls): health, authentication, the API. Wire types live
//!   here only; status codes are mapped in one place.
//! - `integrations`: webhooks and e-mail through a durable outbox, alerts, syslog forwarding to a
//!   SIEM, and the knowledge base.
//! - `client`: a small HTTPS / Unix-socket client for the CLI, the console and tests.
//! - `sync`: `custos sync`, the Sessions API into a customer's own database.
//! - `auth`: passwords, tokens, login throttling.
//! - `archive`: encrypted objects on disk (`archive::stream` is the pure chunk codec).
//! - `audit`: the Merkle-tree audit log, signed checkpoints (`audit::note`) and proofs
//!   (`audit::merkle`, pure).
//! - `keys`: master key, key-encryption keys by epoch, data keys, rotation, sealing.
//! - `store`: every SQL statement.
//! - `tls`, `config`: certificates and `custos.toml`.
//! - `crypto`, `model`: primitives and vocabulary; no I/O.
//!
//! docs/ARCHITECTURE.md has the invariants and which module keeps each.

pub mod age;
pub mod app;
pub mod appliance;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod crypto;
pub mod export;
pub mod integrations;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod redact;
pub mod remote;
pub mod retention;
pub mod session;
pub mod store;
pub mod sync;
pub mod tls;
pub mod web;
