//! The commander's bearer token (`admin.token`) until staff accounts exist.
//!
//! The presented token is compared with the configured one in constant time (both hashed to a
//! fixed length first, so not even the length leaks). The audit trail names a token by its id,
//! the first 8 hex digits of its SHA-256, never by the token itself.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::app::AppState;
use crate::config::AdminConfig;
use crate::http::ApiError;

/// The configured token, kept only as its hash.
#[derive(Clone)]
pub struct AdminToken {
    expected: Option<([u8; 32], String)>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("enabled", &self.expected.is_some())
            .finish()
    }
}

impl AdminToken {
    pub fn from_config(config: &AdminConfig) -> Self {
        Self {
            expected: config.token().map(|t| (digest(t), token_id(t))),
        }
    }

    pub fn enabled(&self) -> bool {
        self.expected.is_some()
    }

    /// The token id when `presented` is the configured token.
    pub fn verify(&self, presented: &str) -> Result<&str, AuthError> {
        let Some((expected, id)) = &self.expected else {
            return Err(AuthError::Disabled);
        };
        if bool::from(digest(presented).ct_eq(expected)) {
            Ok(id)
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// Check the `Authorization` header: `Ok(None)` when there is none.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        if !self.enabled() {
            return Err(AuthError::Disabled);
        }
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AuthError::Invalid)?;
        self.verify(presented).map(Some)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// How the audit trail names a token: `token:` and 8 hex digits of its SHA-256.
pub fn token_id(token: &str) -> String {
    format!("token:{}", hex::encode(&digest(token)[..4]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token configured: commands are off.
    Disabled,
    Missing,
    Invalid,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = match self {
            Self::Disabled => (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "error": "commands_disabled",
                    "message": "incident commands are disabled on this server: \
                                admin.token is not configured",
                })),
            )
                .into_response(),
            Self::Missing | Self::Invalid => ApiError::Unauthorized.into_response(),
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"reliefline\""),
        );
        response
    }
}

/// An authenticated incident commander, for the audit trail.
#[derive(Debug, Clone)]
pub struct Commander {
    /// Token id, e.g. `token:1a2b3c4d`.
    pub actor: String,
    pub client_addr: Option<String>,
}

impl FromRequestParts<AppState> for Commander {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AuthError> {
        let client_addr = client_addr(parts);
        let admin = state.incidents.admin();
        if !admin.enabled() {
            return Err(AuthError::Disabled);
        }
        match admin.check_headers(&parts.headers) {
            Ok(Some(actor)) => Ok(Self {
                actor: actor.to_owned(),
                client_addr,
            }),
            Ok(None) => Err(reject(AuthError::Missing, client_addr.as_deref())),
            Err(e) => Err(reject(e, client_addr.as_deref())),
        }
    }
}

/// Who is reading: the public, or staff showing the admin token (who see staff fields). A
/// request that carries a token must carry the right one.
#[derive(Debug, Clone)]
pub enum Viewer {
    Public,
    Staff(Commander),
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AuthError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(Self::Public);
        }
        Commander::from_request_parts(parts, state)
            .await
            .map(Self::Staff)
    }
}

fn client_addr(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

fn reject(error: AuthError, client_addr: Option<&str>) -> AuthError {
    tracing::warn!(
        reason = ?error,
        client_addr = client_addr.unwrap_or("unknown"),
        "incident command refused"
    );
    error
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn token(value: &str) -> AdminToken {
        AdminToken::from_config(&AdminConfig {
            token: SecretString::from(value.to_owned()),
        })
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_configured_token_passes() {
        let admin = token("correct horse battery staple");
        let id = token_id("correct horse battery staple");
        assert_eq!(
            admin.check_headers(&bearer("Bearer correct horse battery staple")),
            Ok(Some(id.as_str()))
        );
        assert_eq!(
            admin.check_headers(&bearer("bearer correct horse battery staple")),
            Ok(Some(id.as_str()))
        );
        for wrong in [
            "Bearer correct horse battery stapl",
            "Bearer ",
            "Basic Y29ycmVjdA==",
            "correct horse battery staple",
        ] {
            assert_eq!(
                admin.check_headers(&bearer(wrong)),
                Err(AuthError::Invalid),
                "{wrong}"
            );
        }
        assert_eq!(admin.check_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn an_empty_token_disables_commands() {
        let admin = token("  ");
        assert!(!admin.enabled());
        assert_eq!(
            admin.check_headers(&bearer("Bearer anything")),
            Err(AuthError::Disabled)
        );
    }

    #[test]
    fn the_token_id_does_not_reveal_the_token() {
        let id = token_id("s3cret-token-value-0123");
        assert!(id.starts_with("token:"));
        assert_eq!(id.len(), "token:".len() + 8);
        assert!(!id.contains("s3cret"));
        assert!(!format!("{:?}", token("s3cret-token-value-0123")).contains("s3cret"));
    }
}
