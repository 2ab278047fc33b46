//! Credentials: static bearer tokens, basic-auth users, and OAuth clients whose
//! single-use refresh tokens `POST /oauth/token` trades for an access token and the next
//! refresh token. Also revocation and expiry, which tests drive through
//! [`crate::SamplePlatform`].

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::fixture::{Credential, Fixture};

/// Why a request was not authenticated; each becomes `401 invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthError {
    Missing,
    Malformed,
    Unknown,
    Revoked,
}

impl AuthError {
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "missing authorization header",
            AuthError::Malformed => "malformed authorization header",
            AuthError::Unknown => "unknown or expired credential",
            AuthError::Revoked => "the credential has been revoked",
        }
    }
}

/// Why `POST /oauth/token` refused a refresh; `invalid_grant` is the OAuth error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshError {
    InvalidGrant,
}

/// What a successful refresh hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: String,
}

#[derive(Debug)]
struct OAuthClient {
    client_id: String,
    refresh_token: String,
    access_token: Option<String>,
    issued: u64,
}

/// All credentials and what they authenticate as.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// Static bearer token -> principal.
    bearer: HashMap<String, String>,
    /// Basic-auth user name -> (password, principal).
    basic: HashMap<String, (String, String)>,
    /// OAuth principal -> its client state.
    oauth: HashMap<String, OAuthClient>,
    /// Current OAuth access token -> principal.
    access: HashMap<String, String>,
    /// Revoked tokens (bearer, access or refresh) and basic-auth passwords.
    revoked: HashSet<String>,
}

impl Credentials {
    pub fn new(fixture: &Fixture) -> Credentials {
        let mut credentials = Credentials::default();
        for principal in &fixture.principals {
            let name = principal.name.clone();
            match &principal.credential {
                Credential::Bearer { token } => {
                    credentials.bearer.insert(token.clone(), name);
                }
                Credential::Basic { username, password } => {
                    credentials
                        .basic
                        .insert(username.clone(), (password.clone(), name));
                }
                Credential::OAuth {
                    client_id,
                    refresh_token,
                } => {
                    let client = OAuthClient {
                        client_id: client_id.clone(),
                        refresh_token: refresh_token.clone(),
                        access_token: None,
                        issued: 0,
                    };
                    credentials.oauth.insert(name, client);
                }
            }
        }
        credentials
    }

    /// The principal an `authorization` header value authenticates as.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<String, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, value) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        let value = value.trim();
        if value.is_empty() {
            return Err(AuthError::Malformed);
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            if self.revoked.contains(value) {
                return Err(AuthError::Revoked);
            }
            self.bearer
                .get(value)
                .or_else(|| self.access.get(value))
                .cloned()
                .ok_or(AuthError::Unknown)
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD.decode(value).map_err(|_| AuthError::Malformed)?;
            let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
            let (username, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
            match self.basic.get(username) {
                Some((expected, principal)) if expected == password => {
                    if self.revoked.contains(password) {
                        Err(AuthError::Revoked)
                    } else {
                        Ok(principal.clone())
                    }
                }
                _ => Err(AuthError::Unknown),
            }
        } else {
            Err(AuthError::Malformed)
        }
    }

    /// Trades `refresh_token` of OAuth client `client_id` for a new access token and
    /// refresh token. The old refresh token and the principal's previous access token
    /// stop working.
    pub fn refresh(
        &mut self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<Issued, RefreshError> {
        if self.revoked.contains(refresh_token) {
            return Err(RefreshError::InvalidGrant);
        }
        let (principal, client) = self
            .oauth
            .iter_mut()
            .find(|(_, c)| c.client_id == client_id && c.refresh_token == refresh_token)
            .ok_or(RefreshError::InvalidGrant)?;
        client.issued += 1;
        let issued = Issued {
            access_token: format!("adsample-access-{principal}-{}", client.issued),
            refresh_token: format!("adsample-refresh-{principal}-{}", client.issued),
        };
        client.refresh_token = issued.refresh_token.clone();
        if let Some(old) = client.access_token.replace(issued.access_token.clone()) {
            self.access.remove(&old);
        }
        self.access
            .insert(issued.access_token.clone(), principal.clone());
        Ok(issued)
    }

    /// Makes `token` (bearer, access or refresh token, or a basic-auth password) invalid.
    pub fn revoke(&mut self, token: &str) {
        self.revoked.insert(token.to_owned());
    }

    /// Makes `token` a bearer token of `principal` (and no longer revoked).
    pub fn add_bearer(&mut self, token: &str, principal: &str) {
        self.revoked.remove(token);
        self.bearer.insert(token.to_owned(), principal.to_owned());
    }

    /// Invalidates every access token issued so far.
    pub fn expire_access_tokens(&mut self) {
        self.access.clear();
        for client in self.oauth.values_mut() {
            client.access_token = None;
        }
    }

    /// The refresh token that works next for OAuth principal `principal`.
    pub fn current_refresh_token(&self, principal: &str) -> Option<String> {
        self.oauth.get(principal).map(|c| c.refresh_token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_password))
    }

    #[test]
    fn schemes() {
        let c = Credentials::new(&Fixture::demo());
        let auth = |h: &str| c.authenticate(Some(h.as_bytes()));
        assert_eq!(auth("Bearer adsample-token-acme").as_deref(), Ok("acme"));
        assert_eq!(
            auth("bearer  adsample-token-globex ").as_deref(),
            Ok("globex")
        );
        assert_eq!(
            auth(&basic("initech:initech-secret")).as_deref(),
            Ok("initech")
        );
        assert_eq!(auth(&basic("initech:wrong")), Err(AuthError::Unknown));
        assert_eq!(auth("Basic !!!"), Err(AuthError::Malformed));
        assert_eq!(auth("Bearer"), Err(AuthError::Malformed));
        assert_eq!(auth("Token x"), Err(AuthError::Malformed));
        assert_eq!(auth("Bearer nope"), Err(AuthError::Unknown));
        assert_eq!(c.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            c.authenticate(Some(b"Bearer \xff")),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn refresh_is_single_use_and_replaces_access() {
        let mut c = Credentials::new(&Fixture::demo());
        let first = c
            .refresh("intake-demo", "adsample-refresh-umbrella-0")
            .expect("first refresh");
        assert_eq!(
            c.refresh("intake-demo", "adsample-refresh-umbrella-0"),
            Err(RefreshError::InvalidGrant)
        );
        assert_eq!(
            c.refresh("other-client", &first.refresh_token),
            Err(RefreshError::InvalidGrant)
        );
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            c.authenticate(Some(bearer(&first.access_token).as_bytes()))
                .as_deref(),
            Ok("umbrella")
        );
        let second = c
            .refresh("intake-demo", &first.refresh_token)
            .expect("second refresh");
        assert_eq!(
            c.current_refresh_token("umbrella"),
            Some(second.refresh_token.clone())
        );
        assert_eq!(
            c.authenticate(Some(bearer(&first.access_token).as_bytes())),
            Err(AuthError::Unknown)
        );
        c.expire_access_tokens();
        assert_eq!(
            c.authenticate(Some(bearer(&second.access_token).as_bytes())),
            Err(AuthError::Unknown)
        );
    }
}
