//! A broken connector: its `spec` panics, so the plugin traps while the host
//! loads it. The host must record the load failure for this plugin alone and
//! keep every other plugin working.

use intake_plugin_sdk::{Config, Connector, ConnectorError, FetchRequest, Page, Spec};

/// The connector whose `spec` panics.
#[derive(Debug)]
pub struct BadSpec;

intake_plugin_sdk::export!(BadSpec);

impl Connector for BadSpec {
    fn spec() -> Spec {
        panic!("badspec: this plugin's spec always panics");
    }

    fn check(_config: Config) -> Result<(), ConnectorError> {
        Err(ConnectorError::Other("badspec: never loaded".into()))
    }

    fn fetch(_request: FetchRequest) -> Result<Page, ConnectorError> {
        Err(ConnectorError::Other("badspec: never loaded".into()))
    }
}
