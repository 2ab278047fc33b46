//! intake's integration tests, one binary (as in wasmtime): they build the
//! real guest plugins, run the real `intake` binary against the in-process
//! sample platform, and read the database back through the library.

#![allow(clippy::unwrap_used)]

mod support;

mod cli_errors;
mod crash;
mod damage;
mod end_to_end;
mod format;
mod hostile;
mod keys;
mod lifecycle;
mod operator;
mod rules;
mod scheduler;
mod sources;
mod transit;
