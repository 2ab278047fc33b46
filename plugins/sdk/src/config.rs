//! Reading a data source's settings.
//!
//! The host passes the settings as name/value pairs with the spec's defaults
//! already applied (see [`crate::Config`]). A setting set to the empty string
//! counts as not set.
//!
//! ```ignore
//! use intake_plugin_sdk::config;
//!
//! let account = config::require(&request.config, "account_id")?;
//! let page_size: u32 = config::parse(&request.config, "page_size")?.unwrap_or(100);
//! ```

use std::str::FromStr;

use crate::{Config, ConnectorError};

/// The value of setting `name`, or `None` if it is not set or empty.
pub fn get<'a>(config: &'a Config, name: &str) -> Option<&'a str> {
    config
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
}

/// The value of setting `name`, or `default` if it is not set or empty.
pub fn get_or<'a>(config: &'a Config, name: &str, default: &'a str) -> &'a str {
    get(config, name).unwrap_or(default)
}

/// The value of setting `name`, or [`ConnectorError::InvalidConfig`] naming the
/// setting if it is not set or empty.
pub fn require<'a>(config: &'a Config, name: &str) -> Result<&'a str, ConnectorError> {
    get(config, name).ok_or_else(|| {
        ConnectorError::InvalidConfig(format!("the setting `{name}` is required but not set"))
    })
}

/// The value of setting `name` parsed with [`FromStr`]: `Ok(None)` if it is not
/// set or empty, [`ConnectorError::InvalidConfig`] naming the setting if it
/// does not parse.
pub fn parse<T: FromStr>(config: &Config, name: &str) -> Result<Option<T>, ConnectorError> {
    match get(config, name) {
        None => Ok(None),
        Some(value) => value.trim().parse().map(Some).map_err(|_| {
            ConnectorError::InvalidConfig(format!(
                "the setting `{name}` has an invalid value `{value}`"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        vec![
            ("a".into(), "1".into()),
            ("empty".into(), String::new()),
            ("n".into(), "x".into()),
        ]
    }

    #[test]
    fn get_and_require() {
        let c = config();
        assert_eq!(get(&c, "a"), Some("1"));
        assert_eq!(get(&c, "empty"), None);
        assert_eq!(get(&c, "missing"), None);
        assert_eq!(get_or(&c, "missing", "d"), "d");
        assert!(matches!(require(&c, "a"), Ok("1")));
        match require(&c, "empty") {
            Err(ConnectorError::InvalidConfig(m)) => assert!(m.contains("`empty`")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parse_values() {
        let c = config();
        assert!(matches!(parse::<u32>(&c, "a"), Ok(Some(1))));
        assert!(matches!(parse::<u32>(&c, "missing"), Ok(None)));
        assert!(matches!(
            parse::<u32>(&c, "n"),
            Err(ConnectorError::InvalidConfig(_))
        ));
    }
}
