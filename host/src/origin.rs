//! Origins (`scheme://host:port`): what plugins may reach and where a secret
//! may be sent.
//!
//! Matching is exact on scheme, host and port after normalising what HTTP
//! itself treats as equal (the case of scheme and host, a default port written
//! out or not). Everything ambiguous is refused rather than guessed at:
//! userinfo, a trailing dot, an empty host, a path, a non-HTTP scheme. Host
//! names are bounded as DNS bounds them (253 bytes, labels of 63), so that an
//! origin shown in a message or an audit record is never longer than that.

use std::fmt;

/// The longest host name DNS can carry (RFC 1035), in bytes: a longer one
/// names nothing, and bounding it bounds every message and audit record
/// that shows an origin.
pub const MAX_HOST_BYTES: usize = 253;

/// The longest label (the part between dots) of a host name, in bytes.
pub const MAX_LABEL_BYTES: usize = 63;

/// A normalised `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

/// An HTTP scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Why a text is not an acceptable origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not an origin like https://api.example.com or http://127.0.0.1:8080: {reason}"
)]
pub struct OriginError {
    text: String,
    reason: &'static str,
}

impl Origin {
    /// Parses `scheme://host[:port]`, with an optional trailing `/`.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let err = |reason| OriginError {
            text: text.chars().take(200).collect(),
            reason,
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| err("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(err("the scheme must be http or https")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(err("it has a path, query or fragment"));
        }
        Self::from_authority(scheme, authority).map_err(err)
    }

    /// Builds an origin from a scheme and a URI authority (`host[:port]`).
    pub fn from_authority(scheme: Scheme, authority: &str) -> Result<Self, &'static str> {
        if authority.contains('@') {
            return Err("it has user information (`user@`)");
        }
        if authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("it has white space or control characters");
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or("an IPv6 literal lacks `]`")?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "the IPv6 literal is invalid")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 literal")?),
            };
            (format!("[{}]", v6.to_ascii_lowercase()), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (authority.to_ascii_lowercase(), None),
            }
        };
        if host.is_empty() {
            return Err("the host is empty");
        }
        if host.len() > MAX_HOST_BYTES {
            return Err("the host is longer than 253 bytes");
        }
        if !host.starts_with('[') && host.split('.').any(|label| label.len() > MAX_LABEL_BYTES) {
            return Err("a label of the host is longer than 63 bytes");
        }
        if host.ends_with('.') {
            return Err("the host ends with a dot");
        }
        if !host.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err("the host has characters other than letters, digits, `.`, `-` and `_`");
        }
        let port = match port {
            None => scheme.default_port(),
            // Digits only: `u16::from_str` also takes a leading `+`, which the
            // HTTP client need not read the same way.
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or("the port is not a number from 1 to 65535")?,
        };
        Ok(Self { scheme, host, port })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The lowercase host (IPv6 literals in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default if none was written).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Resolves a spec host template such as `{base_url}` or
/// `https://{shop}.example.com` against a data source's config, then parses it.
pub fn resolve_template(
    template: &str,
    config: &[(String, String)],
) -> Result<Origin, OriginError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            return Err(OriginError {
                text: template.to_owned(),
                reason: "a `{` is not closed",
            });
        };
        let name = &rest[start + 1..start + end];
        let value = config
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| OriginError {
                text: template.to_owned(),
                reason: "it names a config field the data source does not set",
            })?;
        out.push_str(value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Origin::parse(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(s: &str) -> Origin {
        Origin::parse(s).expect(s)
    }

    #[test]
    fn normalises_case_and_default_ports() {
        assert_eq!(
            o("HTTPS://API.Example.com"),
            o("https://api.example.com:443/")
        );
        assert_eq!(
            o("http://127.0.0.1:8080").to_string(),
            "http://127.0.0.1:8080"
        );
        assert_ne!(o("http://example.com"), o("https://example.com"));
        assert_ne!(o("http://example.com"), o("http://example.com:8080"));
        assert_eq!(o("http://[::1]:9000").host(), "[::1]");
    }

    #[test]
    fn refuses_ambiguous_authorities() {
        for bad in [
            "http://user@example.com",
            "http://example.com.",
            "http://example.com/path",
            "ftp://example.com",
            "example.com",
            "http://:80",
            "http://example.com:0",
            "http://example.com:99999",
            "http://example.com:+80",
            "http://example.com:",
            "http://[::1",
            "http://exa mple.com",
            "http://evil.com%2f@x",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names_are_bounded_as_dns_bounds_them() {
        let label = "a".repeat(63);
        let longest = [label.as_str(); 4].join(".")[..253].to_owned();
        assert_eq!(o(&format!("http://{longest}:8080")).host(), longest);
        let too_long = format!("{longest}b");
        let err = Origin::parse(&format!("http://{too_long}")).unwrap_err();
        assert!(err.to_string().contains("longer than 253 bytes"), "{err}");
        let err = Origin::parse(&format!("http://{label}a.example.com")).unwrap_err();
        assert!(err.to_string().contains("longer than 63 bytes"), "{err}");
        // A megabyte of host is refused, and the message stays short.
        let huge = format!("http://{}.test", "x".repeat(1 << 20));
        let err = Origin::parse(&huge).unwrap_err().to_string();
        assert!(err.len() < 400, "{} bytes", err.len());
        assert!(Origin::from_authority(Scheme::Http, &"x".repeat(1 << 20)).is_err());
    }

    #[test]
    fn templates_resolve_from_config() {
        let config = vec![
            ("base_url".to_owned(), "http://127.0.0.1:9999".to_owned()),
            ("shop".to_owned(), "acme".to_owned()),
            ("evil".to_owned(), "evil.com/x".to_owned()),
        ];
        assert_eq!(
            resolve_template("{base_url}", &config).expect("ok"),
            o("http://127.0.0.1:9999")
        );
        assert_eq!(
            resolve_template("https://{shop}.example.com", &config).expect("ok"),
            o("https://acme.example.com")
        );
        assert!(resolve_template("https://{evil}.example.com", &config).is_err());
        assert!(resolve_template("{missing}", &config).is_err());
    }
}
