//! Cross-site request forgery protection for the forms: a signed double-submit token plus a
//! same-origin check.
//!
//! A page with a form gets a token from the `rl_csrf` cookie (issued if absent or not ours) and
//! repeats it in a hidden field. A `POST` is accepted only when the field and the cookie carry
//! the same token, the token bears our keyed signature (so a cookie planted by another site is
//! worthless), and the browser does not say the request came from elsewhere (`Sec-Fetch-Site`,
//! `Origin`). Nothing here needs server-side state.

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::crypto::Keys;

pub const COOKIE: &str = "rl_csrf";
/// The hidden form field carrying the token.
pub const FIELD: &str = "csrf";
const PURPOSE: &str = "csrf";
/// How long a form's token stays good: long enough for a slow form on a congested network.
const MAX_AGE_SECS: i64 = 12 * 3600;

/// A fresh random token: a random id and its keyed signature, 64 hexadecimal digits.
fn issue(keys: &Keys) -> String {
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let id = Uuid::from_bytes(nonce);
    format!("{}{}", id.simple(), keys.token(PURPOSE, id))
}

/// Whether `token` is one we issued.
fn signed(keys: &Keys, token: &str) -> bool {
    let Some((id, mac)) = token.split_at_checked(32) else {
        return false;
    };
    Uuid::try_parse(id).is_ok_and(|id| keys.token_matches(PURPOSE, id, mac))
}

/// The token a page's form carries, and the cookie to set when the browser has none of ours.
pub fn for_page(keys: &Keys, headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    if let Some(token) = super::cookie_value(headers, COOKIE).filter(|t| signed(keys, t)) {
        return (token, None);
    }
    let token = issue(keys);
    let cookie = cookie::Cookie::build((COOKIE, token.clone()))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(MAX_AGE_SECS))
        .build();
    (token, HeaderValue::from_str(&cookie.to_string()).ok())
}

/// Why a form post was refused (for the log; the person sees one page for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CrossSite,
    MissingToken,
    BadToken,
}

/// Check a form post: same origin, and the field's token equal to the cookie's and signed.
pub fn check(
    keys: &Keys,
    headers: &HeaderMap,
    field: Option<&str>,
    public_origin: &str,
) -> Result<(), Refusal> {
    if !same_origin(headers, public_origin) {
        return Err(Refusal::CrossSite);
    }
    let cookie = super::cookie_value(headers, COOKIE);
    let (Some(cookie), Some(field)) = (cookie, field.filter(|f| !f.is_empty())) else {
        return Err(Refusal::MissingToken);
    };
    let equal =
        cookie.len() == field.len() && bool::from(cookie.as_bytes().ct_eq(field.as_bytes()));
    if equal && signed(keys, field) {
        Ok(())
    } else {
        Err(Refusal::BadToken)
    }
}

/// What the browser tells about where the request came from. Browsers that send neither
/// header are judged by the token alone.
fn same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match text(header::ORIGIN.as_str()) {
        None => true,
        // Browsers send `null` for a form post under a `no-referrer` policy; then only
        // `Sec-Fetch-Site` (checked above) can vouch for it.
        Some("null") => text("sec-fetch-site") == Some("same-origin"),
        Some(origin) => {
            let host = text(header::HOST.as_str()).unwrap_or_default();
            origin.eq_ignore_ascii_case(public_origin)
                || (!host.is_empty()
                    && (origin.eq_ignore_ascii_case(&format!("http://{host}"))
                        || origin.eq_ignore_ascii_case(&format!("https://{host}"))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_master(&[7; 32])
    }

    fn post(cookie: Option<&str>, extra: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("relief.example"));
        if let Some(c) = cookie {
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("lang=ko; {COOKIE}={c}")).unwrap(),
            );
        }
        for (k, v) in extra {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const ORIGIN: &str = "https://relief.example";

    #[test]
    fn a_page_reuses_a_signed_cookie_and_replaces_anything_else() {
        let keys = keys();
        let (token, set) = for_page(&keys, &HeaderMap::new(), true);
        let set = set.unwrap();
        let set = set.to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Lax"));
        let (again, set) = for_page(&keys, &post(Some(&token), &[]), true);
        assert_eq!((again.as_str(), set), (token.as_str(), None));
        let forged = format!("{}{}", Uuid::nil().simple(), "0".repeat(32));
        let (fresh, set) = for_page(&keys, &post(Some(&forged), &[]), false);
        assert_ne!(fresh, forged);
        assert!(!set.unwrap().to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn a_post_needs_the_same_signed_token_in_field_and_cookie() {
        let keys = keys();
        let token = issue(&keys);
        let ok = post(
            Some(&token),
            &[("origin", ORIGIN), ("sec-fetch-site", "same-origin")],
        );
        assert_eq!(check(&keys, &ok, Some(&token), ORIGIN), Ok(()));
        assert_eq!(
            check(&keys, &post(None, &[]), Some(&token), ORIGIN),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            check(&keys, &post(Some(&token), &[]), None, ORIGIN),
            Err(Refusal::MissingToken)
        );
        let other = issue(&keys);
        assert_eq!(
            check(&keys, &post(Some(&token), &[]), Some(&other), ORIGIN),
            Err(Refusal::BadToken)
        );
        // Signed by another key: a token minted elsewhere is worthless.
        let foreign = issue(&Keys::from_master(&[8; 32]));
        assert_eq!(
            check(&keys, &post(Some(&foreign), &[]), Some(&foreign), ORIGIN),
            Err(Refusal::BadToken)
        );
    }

    #[test]
    fn a_post_from_another_site_is_refused_even_with_a_token() {
        let keys = keys();
        let token = issue(&keys);
        for extra in [
            [("origin", "https://evil.example"), ("x-none", "")],
            [("sec-fetch-site", "cross-site"), ("x-none", "")],
            [("sec-fetch-site", "same-site"), ("x-none", "")],
            [("origin", "null"), ("x-none", "")],
        ] {
            assert_eq!(
                check(&keys, &post(Some(&token), &extra), Some(&token), ORIGIN),
                Err(Refusal::CrossSite),
                "{extra:?}"
            );
        }
        let null_same_origin = post(
            Some(&token),
            &[("origin", "null"), ("sec-fetch-site", "same-origin")],
        );
        assert_eq!(
            check(&keys, &null_same_origin, Some(&token), ORIGIN),
            Ok(())
        );
        let via_host = post(Some(&token), &[("origin", "http://relief.example")]);
        assert_eq!(check(&keys, &via_host, Some(&token), ORIGIN), Ok(()));
    }
}
