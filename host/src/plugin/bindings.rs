//! Rust bindings for the `intake:connector/plugin` world, generated from `wit/`.
//!
//! This is the only place `bindgen!` runs. The wasi:http, wasi:io and
//! wasi:clocks types come from wasmtime-wasi(-http), whose host
//! implementations serve them.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    // `credentials` is async: a reveal waits for its audit record to be
    // written before it returns a value.
    imports: {
        "intake:connector/credentials": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use self::intake::connector::{credentials, log, types};
pub use exports::intake::connector::connector;
