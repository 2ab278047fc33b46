//! A plugin's spec as the host keeps it, checked when the plugin loads, and
//! what it means for one data source: its effective config and the origins
//! its requests and secrets may go to.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::origin::{Origin, resolve_template};

use super::bindings::types;

/// One credential field a plugin declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldSpec {
    /// Name.
    pub name: String,
    /// Label for people.
    pub label: String,
    /// Hidden on input and never displayed.
    pub secret: bool,
    /// Must be present.
    pub required: bool,
    /// Origins (templates) the value may be injected into.
    pub hosts: Vec<String>,
}

/// One config setting a plugin declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigSpec {
    /// Name.
    pub name: String,
    /// Label for people.
    pub label: String,
    /// Must be set.
    pub required: bool,
    /// Value used when not set.
    pub default: Option<String>,
}

/// What a plugin declares about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginSpec {
    /// Platform id.
    pub platform: String,
    /// Human-readable name.
    pub display_name: String,
    /// Plugin version.
    pub version: String,
    /// Credential fields.
    pub credential_fields: Vec<FieldSpec>,
    /// Config settings.
    pub config_fields: Vec<ConfigSpec>,
    /// Origins (templates) the plugin needs.
    pub hosts: Vec<String>,
}

/// Where one data source may send requests, and each field's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Origins its requests may go to: declared and allowed.
    pub hosts: Vec<Origin>,
    /// Origins the spec declares for it, allowed or not (for messages).
    pub declared: Vec<Origin>,
    /// Each credential field's allowed origins.
    pub fields: HashMap<String, Vec<Origin>>,
}

/// The largest value a credential field may hold, in bytes.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;

/// The most credential fields a spec may declare. What the host keeps per
/// invocation for a credential (audit records of one request, values it
/// scrubs) is bounded by the declared fields, so they are bounded too.
pub const MAX_CREDENTIAL_FIELDS: usize = 64;

impl From<types::PluginSpec> for PluginSpec {
    fn from(s: types::PluginSpec) -> Self {
        Self {
            platform: s.platform,
            display_name: s.display_name,
            version: s.version,
            credential_fields: s
                .credential_fields
                .into_iter()
                .map(|f| FieldSpec {
                    name: f.name,
                    label: f.label,
                    secret: f.secret,
                    required: f.required,
                    hosts: f.hosts,
                })
                .collect(),
            config_fields: s
                .config_fields
                .into_iter()
                .map(|f| ConfigSpec {
                    name: f.name,
                    label: f.label,
                    required: f.required,
                    default: f.default,
                })
                .collect(),
            hosts: s.hosts,
        }
    }
}

fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_platform(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl PluginSpec {
    /// Checks the spec is well formed; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_platform(&self.platform) {
            return Err(format!(
                "its platform id `{}` must be 1 to 64 lowercase letters, digits or `-`",
                self.platform
            ));
        }
        if self.credential_fields.len() > MAX_CREDENTIAL_FIELDS {
            return Err(format!(
                "it declares {} credential fields; at most {MAX_CREDENTIAL_FIELDS} are allowed",
                self.credential_fields.len()
            ));
        }
        let mut names = BTreeSet::new();
        for f in &self.credential_fields {
            if !valid_field_name(&f.name) {
                return Err(format!("credential field `{}` has an invalid name", f.name));
            }
            if !names.insert(f.name.as_str()) {
                return Err(format!("credential field `{}` is declared twice", f.name));
            }
            for h in &f.hosts {
                check_template(h).map_err(|e| format!("credential field `{}`: {e}", f.name))?;
            }
        }
        let mut names = BTreeSet::new();
        for c in &self.config_fields {
            if !valid_field_name(&c.name) {
                return Err(format!("config field `{}` has an invalid name", c.name));
            }
            if !names.insert(c.name.as_str()) {
                return Err(format!("config field `{}` is declared twice", c.name));
            }
        }
        for h in &self.hosts {
            check_template(h)?;
        }
        Ok(())
    }

    /// The declared credential field `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.credential_fields.iter().find(|f| f.name == name)
    }

    /// A data source's config with defaults applied, checked against the
    /// declaration: required settings present, unknown ones refused.
    pub fn effective_config(
        &self,
        config: &[(String, String)],
    ) -> Result<Vec<(String, String)>, String> {
        if let Some((k, _)) = config
            .iter()
            .find(|(k, _)| !self.config_fields.iter().any(|c| c.name == *k))
        {
            let known: Vec<_> = self.config_fields.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "`{k}` is not a setting of platform `{}` (it has: {})",
                self.platform,
                known.join(", ")
            ));
        }
        let mut out = Vec::new();
        for c in &self.config_fields {
            match config.iter().find(|(k, _)| *k == c.name) {
                Some((_, v)) => out.push((c.name.clone(), v.clone())),
                None => match &c.default {
                    Some(d) => out.push((c.name.clone(), d.clone())),
                    None if c.required => {
                        return Err(format!(
                            "setting `{}` ({}) is required; give it with --set {}=VALUE",
                            c.name, c.label, c.name
                        ));
                    }
                    None => {}
                },
            }
        }
        Ok(out)
    }

    /// Where one data source's requests and secrets may go: the spec's hosts
    /// resolved with its config, kept only if the operator allows them.
    pub fn origins_for(
        &self,
        config: &[(String, String)],
        allowed: &[Origin],
    ) -> Result<Reach, String> {
        let resolve = |templates: &[String]| -> Result<Vec<Origin>, String> {
            let mut out = Vec::new();
            for t in templates {
                let o = resolve_template(t, config).map_err(|e| e.to_string())?;
                if !out.contains(&o) {
                    out.push(o);
                }
            }
            Ok(out)
        };
        let declared = resolve(&self.hosts)?;
        let hosts: Vec<Origin> = declared
            .iter()
            .filter(|o| allowed.contains(o))
            .cloned()
            .collect();
        let mut fields = HashMap::new();
        for f in &self.credential_fields {
            let origins = resolve(&f.hosts)?
                .into_iter()
                .filter(|o| hosts.contains(o))
                .collect();
            fields.insert(f.name.clone(), origins);
        }
        Ok(Reach {
            hosts,
            declared,
            fields,
        })
    }
}

impl PluginSpec {
    /// Checks credential values against the declaration: every required field
    /// present and non-empty, no undeclared field, no value over
    /// [`MAX_FIELD_BYTES`].
    pub fn validate_secrets(&self, fields: &crate::secret::SecretFields) -> Result<(), String> {
        for (name, value) in fields.iter() {
            if self.field(name).is_none() {
                let known: Vec<_> = self
                    .credential_fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect();
                // The name is not shown: a bare token pasted where a
                // `field=value` line belongs would be read as a name.
                return Err(format!(
                    "the secrets name a field that platform `{}` does not have (it has: {}); \
                     the name is not shown, in case it is a secret pasted without `field=`",
                    self.platform,
                    known.join(", ")
                ));
            }
            if value.is_empty() {
                return Err(format!("credential field `{name}` is empty"));
            }
            if value.len() > MAX_FIELD_BYTES {
                return Err(format!(
                    "credential field `{name}` is longer than {MAX_FIELD_BYTES} bytes"
                ));
            }
        }
        if let Some(f) = self
            .credential_fields
            .iter()
            .find(|f| f.required && fields.get(&f.name).is_none())
        {
            return Err(format!(
                "credential field `{}` ({}) is required",
                f.name, f.label
            ));
        }
        if fields.is_empty() {
            return Err("no credential field was given".into());
        }
        Ok(())
    }
}

fn check_template(t: &str) -> Result<(), String> {
    if t.contains('{') {
        // Checked per data source, once the config is known.
        return Ok(());
    }
    Origin::parse(t).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PluginSpec {
        PluginSpec {
            platform: "adsample".into(),
            display_name: "AdSample".into(),
            version: "0.1.0".into(),
            credential_fields: vec![FieldSpec {
                name: "access_token".into(),
                label: "Access token".into(),
                secret: true,
                required: true,
                hosts: vec!["{base_url}".into()],
            }],
            config_fields: vec![
                ConfigSpec {
                    name: "base_url".into(),
                    label: "Base URL".into(),
                    required: true,
                    default: None,
                },
                ConfigSpec {
                    name: "page_size".into(),
                    label: "Page size".into(),
                    required: false,
                    default: Some("100".into()),
                },
            ],
            hosts: vec!["{base_url}".into()],
        }
    }

    #[test]
    fn config_defaults_required_and_unknown() {
        let s = spec();
        let c = s
            .effective_config(&[("base_url".into(), "http://127.0.0.1:1".into())])
            .expect("ok");
        assert_eq!(c.len(), 2);
        assert!(s.effective_config(&[]).unwrap_err().contains("base_url"));
        assert!(
            s.effective_config(&[("nope".into(), "1".into())])
                .unwrap_err()
                .contains("nope")
        );
    }

    #[test]
    fn origins_need_both_spec_and_operator() {
        let s = spec();
        let config = vec![("base_url".into(), "http://127.0.0.1:9".into())];
        let allowed = vec![Origin::parse("http://127.0.0.1:9").expect("ok")];
        let reach = s.origins_for(&config, &allowed).expect("ok");
        assert_eq!(reach.hosts, allowed);
        assert_eq!(reach.declared, allowed);
        assert_eq!(reach.fields["access_token"], allowed);
        let reach = s.origins_for(&config, &[]).expect("ok");
        assert!(reach.hosts.is_empty());
        assert_eq!(reach.declared, allowed, "declared whether allowed or not");
        assert!(reach.fields["access_token"].is_empty());
    }

    #[test]
    fn bad_specs_are_explained() {
        let mut s = spec();
        s.platform = "Ad Sample".into();
        assert!(s.validate().unwrap_err().contains("platform id"));
        let mut s = spec();
        s.credential_fields.push(s.credential_fields[0].clone());
        assert!(s.validate().unwrap_err().contains("twice"));
        let mut s = spec();
        s.credential_fields = (0..=MAX_CREDENTIAL_FIELDS)
            .map(|i| FieldSpec {
                name: format!("f{i}"),
                ..spec().credential_fields[0].clone()
            })
            .collect();
        assert!(s.validate().unwrap_err().contains("at most 64"));
        s.credential_fields.pop();
        assert_eq!(s.validate(), Ok(()));
    }
}
