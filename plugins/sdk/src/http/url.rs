//! Pure URL helpers used by the HTTP client: splitting an `http`/`https` URL into
//! the parts `wasi:http` wants, and percent-encoding that leaves credential
//! placeholders (`{{intake:...}}`) intact so the host can find and replace them.
//!
//! Nothing here calls the host, so it runs in unit tests on the build machine.

use super::HttpError;

/// The scheme of a URL the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlScheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

/// A URL split into the parts of a `wasi:http` outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// `http` or `https`.
    pub scheme: UrlScheme,
    /// `host[:port]`, as written in the URL.
    pub authority: String,
    /// The path and query, starting with `/` (the fragment is dropped).
    pub path_with_query: String,
}

impl UrlParts {
    /// The origin, `scheme://authority`, for messages.
    pub fn origin(&self) -> String {
        let scheme = match self.scheme {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        };
        format!("{scheme}://{}", self.authority)
    }
}

/// Splits an absolute `http://` or `https://` URL into scheme, authority and
/// path-with-query.
///
/// Rejects other schemes, user info (`user@host`), an empty host, a port that is
/// not a number, and whitespace or control characters anywhere.
pub fn split_url(url: &str) -> Result<UrlParts, HttpError> {
    let invalid = |why: &str| HttpError::InvalidUrl(format!("`{url}`: {why}"));
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains whitespace or control characters"));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("not an absolute URL (scheme://host/path)"))?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        UrlScheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        UrlScheme::Https
    } else {
        return Err(invalid("only http and https URLs are supported"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    if authority.contains('@') {
        return Err(invalid("user info in URLs is not supported"));
    }
    check_authority(authority).map_err(invalid)?;
    let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
    let path_with_query = if tail.is_empty() {
        "/".to_owned()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_owned()
    };
    Ok(UrlParts {
        scheme,
        authority: authority.to_owned(),
        path_with_query,
    })
}

fn check_authority(authority: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: [addr] or [addr]:port
        let (addr, after) = rest.split_once(']').ok_or("unclosed `[` in host")?;
        if addr.is_empty() {
            return Err("no host");
        }
        match after {
            "" => (addr, None),
            _ => (
                addr,
                Some(after.strip_prefix(':').ok_or("junk after `]` in host")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    let port_ok =
        |port: &str| port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    if port.is_some_and(|port| !port_ok(port)) {
        return Err("the port is not a number from 0 to 65535");
    }
    Ok(())
}

/// Percent-encodes `value` for a query-string or form component: every byte
/// but ASCII letters, digits and `-._~` becomes `%XX`, except that credential
/// placeholders (`{{intake:...}}`) are copied unchanged, since the host looks
/// for them literally and encodes the value it puts in their place.
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while !rest.is_empty() {
        if let Some(len) = placeholder_len(rest) {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        let len = c.len_utf8();
        for &b in &rest.as_bytes()[..len] {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        rest = &rest[len..];
    }
    out
}

/// Percent-encodes a path segment (such as an account id) the same way as
/// [`encode_component`], so `/` and `?` in it cannot change the path.
pub fn encode_path_segment(segment: &str) -> String {
    encode_component(segment)
}

/// Encodes `pairs` as an `application/x-www-form-urlencoded` body
/// (`a=1&b=2`), keeping credential placeholders intact (see
/// [`encode_component`]).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode_component(name), encode_component(value)))
        .collect::<Vec<_>>()
        .join("&")
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// If `text` starts with a well-formed placeholder, its length.
fn placeholder_len(text: &str) -> Option<usize> {
    let inner = text.strip_prefix("{{intake:")?;
    let end = inner.find("}}")?;
    let body = &inner[..end];
    let well_formed = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':');
    well_formed.then_some("{{intake:".len() + end + "}}".len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (UrlScheme, String, String) {
        let p = split_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (p.scheme, p.authority, p.path_with_query)
    }

    #[test]
    fn splits_urls() {
        assert_eq!(
            parts("http://127.0.0.1:8787/v1/me"),
            (UrlScheme::Http, "127.0.0.1:8787".into(), "/v1/me".into())
        );
        assert_eq!(
            parts("HTTPS://api.example.com"),
            (UrlScheme::Https, "api.example.com".into(), "/".into())
        );
        assert_eq!(
            parts("https://api.example.com?x=1"),
            (UrlScheme::Https, "api.example.com".into(), "/?x=1".into())
        );
        assert_eq!(
            parts("https://h/a/b?c=d&e=f#frag"),
            (UrlScheme::Https, "h".into(), "/a/b?c=d&e=f".into())
        );
        assert_eq!(
            parts("http://[::1]:80/x"),
            (UrlScheme::Http, "[::1]:80".into(), "/x".into())
        );
        assert_eq!(
            split_url("http://h/").map(|p| p.origin()),
            Ok("http://h".into())
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "ftp://h/x",
            "h/x",
            "http:///x",
            "http://user:pw@h/x",
            "http://h:port/x",
            "http://h:99999/x",
            "http://h:/x",
            "http://h /x",
            "http://[::1/x",
            "http://[::1]x/",
        ] {
            assert!(
                matches!(split_url(url), Err(HttpError::InvalidUrl(_))),
                "{url} should be rejected"
            );
        }
    }

    #[test]
    fn encodes_components_keeping_placeholders() {
        assert_eq!(encode_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode_component("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(
            encode_component("x{{intake:refresh_token}}y"),
            "x{{intake:refresh_token}}y"
        );
        assert_eq!(
            encode_component("{{intake:basic:u:p}}"),
            "{{intake:basic:u:p}}"
        );
        // Not a placeholder: encoded.
        assert_eq!(
            encode_component("{{intake:Bad Name}}"),
            "%7B%7Bintake%3ABad%20Name%7D%7D"
        );
        assert_eq!(encode_component("{{intake:open"), "%7B%7Bintake%3Aopen");
    }

    #[test]
    fn encodes_forms() {
        assert_eq!(
            form_encode(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "{{intake:refresh_token}}"),
                ("client_id", "{{intake:client_id}}"),
            ]),
            "grant_type=refresh_token&refresh_token={{intake:refresh_token}}&client_id={{intake:client_id}}"
        );
    }
}
