//! The SDK for writing intake connector plugins in Rust.
//!
//! A connector plugin is a WebAssembly component, one per data platform, that the
//! intake host loads. It exports three functions (see `wit/connector.wit`):
//!
//! * `spec` describes the plugin: its platform id, the fields a credential holds,
//!   the settings of a data source and the origins it needs to reach;
//! * `check` makes one cheap authenticated request to see that a credential and a
//!   data source's settings work;
//! * `fetch` fetches one page of records (JSON Lines) and a cursor to resume from.
//!
//! The host holds the users' credentials. A plugin normally never sees a secret:
//! it puts a *placeholder* such as `{{intake:access_token}}` into an outgoing
//! request (see [`credentials::placeholder`]) and the host substitutes the value
//! as the request leaves, if the request goes to an origin declared for that
//! field. Outgoing HTTP goes through [`http`], log lines through [`log`], and the
//! data source's settings are read with [`config`].
//!
//! # A minimal connector
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "myplatform"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! intake-plugin-sdk = { path = "../sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```ignore
//! use intake_plugin_sdk::http::Request;
//! use intake_plugin_sdk::{
//!     config, credentials, info, Config, ConfigField, Connector, ConnectorError,
//!     CredentialField, FetchRequest, Page, Spec,
//! };
//!
//! struct MyPlatform;
//!
//! impl Connector for MyPlatform {
//!     fn spec() -> Spec {
//!         Spec {
//!             platform: "myplatform".into(),
//!             display_name: "My Platform".into(),
//!             version: "0.1.0".into(),
//!             credential_fields: vec![CredentialField {
//!                 name: "api_key".into(),
//!                 label: "API key".into(),
//!                 secret: true,
//!                 required: true,
//!                 hosts: vec!["https://api.myplatform.example".into()],
//!             }],
//!             config_fields: vec![ConfigField {
//!                 name: "account_id".into(),
//!                 label: "Account id".into(),
//!                 required: true,
//!                 default: None,
//!             }],
//!             hosts: vec!["https://api.myplatform.example".into()],
//!         }
//!     }
//!
//!     fn check(config: Config) -> Result<(), ConnectorError> {
//!         let account = config::require(&config, "account_id")?;
//!         let auth = format!("Bearer {}", credentials::placeholder("api_key")?);
//!         let response = Request::get(format!(
//!             "https://api.myplatform.example/accounts/{account}"
//!         ))
//!         .header("authorization", auth)
//!         .send()?;
//!         match response.status {
//!             200 => Ok(()),
//!             401 => Err(ConnectorError::AuthFailed("the API key was rejected".into())),
//!             status => Err(ConnectorError::Other(format!("unexpected status {status}"))),
//!         }
//!     }
//!
//!     fn fetch(request: FetchRequest) -> Result<Page, ConnectorError> {
//!         let account = config::require(&request.config, "account_id")?;
//!         let auth = format!("Bearer {}", credentials::placeholder("api_key")?);
//!         let response = Request::get(format!(
//!             "https://api.myplatform.example/accounts/{account}/rows"
//!         ))
//!         .header("authorization", auth)
//!         .send()?;
//!         if response.status != 200 {
//!             return Err(ConnectorError::Transient(format!("status {}", response.status)));
//!         }
//!         let rows: Vec<serde_json::Value> = response.json()?;
//!         let mut records = Vec::new();
//!         for row in &rows {
//!             serde_json::to_writer(&mut records, row)
//!                 .map_err(|e| ConnectorError::Other(e.to_string()))?;
//!             records.push(b'\n');
//!         }
//!         info!("fetched {} rows for account {account}", rows.len());
//!         Ok(Page { records, cursor: None, more: false })
//!     }
//! }
//!
//! intake_plugin_sdk::export!(MyPlatform);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the `.wasm` file
//! cargo writes is already a component the host can load.

pub mod config;
pub mod credentials;
pub mod http;
pub mod log;

/// The bindings `wit-bindgen` generates for the `intake:connector/plugin` world
/// (and the `wasi:http`, `wasi:io` and `wasi:clocks` interfaces it uses).
///
/// Connector authors rarely need this module directly: the SDK re-exports the
/// types at its root and wraps the imports in [`credentials`], [`log`] and
/// [`http`]. It is public because the [`export!`] macro expands to code that
/// refers to it.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "intake:connector/plugin",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_connector",
        default_bindings_module: "intake_plugin_sdk::bindings",
    });
}

pub use bindings::intake::connector::types::{
    Config, ConfigField, ConnectorError, CredentialField, FetchRequest, Page, PluginSpec, RateLimit,
};

/// What a plugin is: the WIT record `plugin-spec` (an alias of [`PluginSpec`]),
/// returned by [`Connector::spec`].
pub use bindings::intake::connector::types::PluginSpec as Spec;

/// The trait a connector implements: `spec`, `check` and `fetch`.
///
/// This is the `Guest` trait `wit-bindgen` generates for the exported
/// `intake:connector/connector` interface; [`Connector`] is the same trait.
pub use bindings::exports::intake::connector::connector::Guest;

/// The trait a connector implements (an alias of [`Guest`]).
pub use bindings::exports::intake::connector::connector::Guest as Connector;

/// Exports a type implementing [`Connector`] as the plugin's `connector`
/// interface. Invoke it once, at the root of the connector's `cdylib` crate:
///
/// ```ignore
/// struct MyPlatform;
/// impl intake_plugin_sdk::Connector for MyPlatform { /* ... */ }
/// intake_plugin_sdk::export!(MyPlatform);
/// ```
///
/// The argument must be a plain type name (an identifier), not a path.
///
/// The exports are emitted only when compiling for `wasm32`; on other targets
/// (for example when running a connector's unit tests on the build machine) the
/// macro only checks that the type implements [`Connector`].
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
    $crate::bindings::export_connector!($ty with_types_in $crate::bindings);
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn assert_connector<T: $crate::Connector>() {}
            let _ = assert_connector::<$ty>;
        };
    };
}
