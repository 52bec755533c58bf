//! Integration tests at the boundaries a user touches: the `custos` command line as typed, HTTPS
//! with a pinned certificate, and the files on disk as an attacker would see them.

mod age_interop;
mod appliance;
mod archive;
mod audit;
mod browser;
mod cli;
mod console;
mod example_crm;
mod export;
mod gauntlet;
mod https;
mod image;
mod integration_api;
mod integration_docs;
mod knowledge;
mod metrics;
mod openapi;
mod permissions;
mod remote;
mod reports;
mod retention;
mod sessions;
mod sync;
mod util;
mod webdriver;
mod webhooks;
mod websec;
