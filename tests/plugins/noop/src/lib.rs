//! The trivial connector of intake's benchmarks (`host/benches/`): no I/O,
//! no secrets, and every fetch returns one empty page. What it costs to run
//! is what the host costs.

use intake_plugin_sdk::{
    Config, Connector, ConnectorError, CredentialField, FetchRequest, Page, Spec,
};

/// The trivial connector.
#[derive(Debug)]
pub struct Noop;

intake_plugin_sdk::export!(Noop);

impl Connector for Noop {
    fn spec() -> Spec {
        Spec {
            platform: "noop".into(),
            display_name: "No-op test plugin".into(),
            version: "0.1.0".into(),
            credential_fields: vec![CredentialField {
                name: "token".into(),
                label: "Token".into(),
                secret: true,
                required: false,
                hosts: Vec::new(),
            }],
            config_fields: Vec::new(),
            hosts: Vec::new(),
        }
    }

    fn check(_config: Config) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn fetch(_request: FetchRequest) -> Result<Page, ConnectorError> {
        Ok(Page {
            records: Vec::new(),
            cursor: None,
            more: false,
        })
    }
}
