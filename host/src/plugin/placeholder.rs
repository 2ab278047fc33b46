//! Placeholders: how a plugin uses a secret without seeing it.
//!
//! A plugin writes `{{intake:FIELD}}` (or `{{intake:basic:USER:PASSWORD}}` for
//! an HTTP basic token) into an outgoing request. Just before the request
//! leaves, the host finds every placeholder, asks the broker for all the
//! fields at once (one credential version, one decision per field), and
//! replaces each placeholder with its value encoded for where it stands.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use crate::secret::SecretFields;

const OPEN: &str = "{{intake:";
const CLOSE: &str = "}}";

/// Where a placeholder stands, which decides how its value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A header value: verbatim; CR, LF and NUL are refused.
    Header,
    /// The path or query of the URI: percent-encoded.
    Uri,
    /// An `application/x-www-form-urlencoded` body: percent-encoded.
    Form,
    /// A JSON body: escaped as the inside of a JSON string.
    Json,
    /// Any other body: verbatim.
    Raw,
}

/// One placeholder found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{{intake:FIELD}}`.
    Field(String),
    /// `{{intake:basic:USER:PASSWORD}}`.
    Basic(String, String),
}

impl Placeholder {
    /// The fields it needs.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Placeholder::Field(f) => vec![f],
            Placeholder::Basic(u, p) => vec![u, p],
        }
    }
}

/// A malformed placeholder; the request is refused rather than sent with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed placeholder in the {0}: expected {{{{intake:FIELD}}}} or {{{{intake:basic:USER:PASSWORD}}}}"
)]
pub struct Malformed(pub &'static str);

/// The text of the placeholder for `field`.
pub fn for_field(field: &str) -> String {
    format!("{OPEN}{field}{CLOSE}")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Finds every placeholder in `text`, in order.
pub fn find(
    text: &[u8],
    place: &'static str,
) -> Result<Vec<(usize, usize, Placeholder)>, Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = find_bytes(&text[at..], OPEN.as_bytes()).map(|i| i + at) {
        let inner_start = start + OPEN.len();
        let end = find_bytes(&text[inner_start..], CLOSE.as_bytes())
            .map(|i| i + inner_start)
            .ok_or(Malformed(place))?;
        let inner = std::str::from_utf8(&text[inner_start..end]).map_err(|_| Malformed(place))?;
        let placeholder = match inner.split(':').collect::<Vec<_>>().as_slice() {
            [field] if valid_name(field) => Placeholder::Field((*field).to_owned()),
            ["basic", user, pass] if valid_name(user) && valid_name(pass) => {
                Placeholder::Basic((*user).to_owned(), (*pass).to_owned())
            }
            _ => return Err(Malformed(place)),
        };
        out.push((start, end + CLOSE.len(), placeholder));
        at = end + CLOSE.len();
    }
    Ok(out)
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Why a value cannot stand where its placeholder is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the value of a placeholder cannot be put in a {0} (it has line breaks or NUL)")]
pub struct Unencodable(&'static str);

/// Replaces the placeholders `found` in `text` with `values`, encoded for `ctx`.
/// The result holds secrets and is wiped on drop.
pub fn substitute(
    text: &[u8],
    found: &[(usize, usize, Placeholder)],
    values: &SecretFields,
    ctx: Context,
) -> Result<Zeroizing<Vec<u8>>, Unencodable> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() + 64));
    let mut at = 0;
    for (start, end, placeholder) in found {
        out.extend_from_slice(&text[at..*start]);
        let raw: Zeroizing<String> = match placeholder {
            Placeholder::Field(f) => Zeroizing::new(
                values
                    .get(f)
                    .map(|v| v.expose().to_owned())
                    .unwrap_or_default(),
            ),
            Placeholder::Basic(u, p) => basic_token(values, u, p),
        };
        encode_into(&mut out, &raw, ctx)?;
        at = *end;
    }
    out.extend_from_slice(&text[at..]);
    Ok(out)
}

/// The HTTP basic token (`base64(USER:PASSWORD)`) of fields `user` and
/// `password` of `values` (a missing one counts as empty). Wiped on drop.
pub fn basic_token(values: &SecretFields, user: &str, password: &str) -> Zeroizing<String> {
    let pair = Zeroizing::new(format!(
        "{}:{}",
        values.get(user).map(|v| v.expose()).unwrap_or_default(),
        values.get(password).map(|v| v.expose()).unwrap_or_default()
    ));
    Zeroizing::new(BASE64.encode(pair.as_bytes()))
}

/// The distinct forms `value` takes where a placeholder for it stands: as
/// is (headers, raw bodies), percent-encoded (URIs, forms) and escaped for
/// JSON. Wiped on drop.
pub fn forms(value: &str) -> Vec<Zeroizing<String>> {
    let mut out = vec![Zeroizing::new(value.to_owned())];
    for ctx in [Context::Uri, Context::Json] {
        let mut bytes = Zeroizing::new(Vec::with_capacity(value.len() * 3));
        if encode_into(&mut bytes, value, ctx).is_err() {
            continue;
        }
        // Both encodings produce UTF-8 from UTF-8.
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if !out.iter().any(|f| f.as_str() == text) {
            out.push(Zeroizing::new(text.to_owned()));
        }
    }
    out
}

fn encode_into(out: &mut Vec<u8>, value: &str, ctx: Context) -> Result<(), Unencodable> {
    match ctx {
        Context::Header => {
            if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(Unencodable("header"));
            }
            out.extend_from_slice(value.as_bytes());
        }
        Context::Raw => out.extend_from_slice(value.as_bytes()),
        Context::Uri | Context::Form => {
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b);
                } else {
                    out.extend_from_slice(format!("%{b:02X}").as_bytes());
                }
            }
        }
        Context::Json => {
            for c in value.chars() {
                match c {
                    '"' => out.extend_from_slice(b"\\\""),
                    '\\' => out.extend_from_slice(b"\\\\"),
                    c if (c as u32) < 0x20 => {
                        out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> SecretFields {
        let mut v = SecretFields::new();
        v.insert("token", "a b&c\"\\".into());
        v.insert("user", "initech".into());
        v.insert("pass", "s3cret".into());
        v
    }

    fn sub(text: &str, ctx: Context) -> String {
        let found = find(text.as_bytes(), "test").expect("well formed");
        let out = substitute(text.as_bytes(), &found, &values(), ctx).expect("encodable");
        String::from_utf8(out.to_vec()).expect("utf8")
    }

    #[test]
    fn finds_fields_and_basic() {
        let found = find(b"x {{intake:token}} y {{intake:basic:user:pass}}", "t").expect("ok");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].2, Placeholder::Field("token".into()));
        assert_eq!(found[1].2, Placeholder::Basic("user".into(), "pass".into()));
    }

    #[test]
    fn malformed_placeholders_are_refused() {
        for bad in [
            "{{intake:token",
            "{{intake:To-ken}}",
            "{{intake:basic:a}}",
            "{{intake:}}",
        ] {
            assert!(find(bad.as_bytes(), "t").is_err(), "{bad}");
        }
        assert!(find(b"{{other}} {intake:x}", "t").expect("ok").is_empty());
    }

    #[test]
    fn encodes_for_each_context() {
        assert_eq!(
            sub("Bearer {{intake:token}}", Context::Header),
            "Bearer a b&c\"\\"
        );
        assert_eq!(
            sub("/x?t={{intake:token}}", Context::Uri),
            "/x?t=a%20b%26c%22%5C"
        );
        assert_eq!(
            sub(r#"{"t":"{{intake:token}}"}"#, Context::Json),
            r#"{"t":"a b&c\"\\"}"#
        );
        assert_eq!(
            sub("Basic {{intake:basic:user:pass}}", Context::Header),
            "Basic aW5pdGVjaDpzM2NyZXQ="
        );
    }

    #[test]
    fn forms_are_distinct_encodings() {
        let forms =
            |v: &str| -> Vec<String> { super::forms(v).iter().map(|f| f.to_string()).collect() };
        assert_eq!(forms("plain-Token_1"), ["plain-Token_1"]);
        assert_eq!(
            forms("a b&c\"\\"),
            ["a b&c\"\\", "a%20b%26c%22%5C", "a b&c\\\"\\\\"]
        );
        assert_eq!(
            &*basic_token(&values(), "user", "pass"),
            "aW5pdGVjaDpzM2NyZXQ="
        );
    }

    #[test]
    fn header_injection_is_refused() {
        let mut v = SecretFields::new();
        v.insert("token", "x\r\nEvil: 1".into());
        let found = find(b"{{intake:token}}", "t").expect("ok");
        assert!(substitute(b"{{intake:token}}", &found, &v, Context::Header).is_err());
    }
}
