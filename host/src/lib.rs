//! intake: a host for data connectors.
//!
//! intake keeps every user's credentials encrypted in an embedded database
//! ([`store`], [`crypto`]) and runs one connector plugin per platform as a
//! sandboxed WebAssembly component ([`plugin`]). A plugin asks for secrets
//! through the WIT interface `intake:connector/credentials`; the [`broker`]
//! decides every request and audits it. The [`scheduler`] runs data sources
//! concurrently and writes their records out, each data source into its
//! own directory ([`output_dir`]). The `intake` binary ([`cli`])
//! is a thin layer over this library.

pub mod broker;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod origin;
pub mod output_dir;
pub mod plugin;
pub mod scheduler;
pub mod secret;
pub mod store;
