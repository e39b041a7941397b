//! JSON request bodies answered in our error format rather than axum's.
//!
//! [`JsonBody<T>`] is a drop-in for `axum::Json<T>` as an extractor (responses keep using
//! `axum::Json`): a wrong or missing `Content-Type` is 415, a body over the route's limit 413,
//! broken JSON 400 `malformed_json`, and JSON of the wrong shape 422 `validation_failed` with the
//! offending field named by its path (`reporter.phone`, `services[1]`). Unknown fields are
//! rejected by giving the target type `#[serde(deny_unknown_fields)]`; they are reported at their
//! own path (`title.jp`).

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, OptionalFromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// A JSON request body of type `T`; see the module documentation for the answers it gives.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

/// The body limit in force for a route, so a 413 can say what it is. [`limit`] sets both.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// axum's own default, in force where no [`limit`] was applied.
const AXUM_DEFAULT_LIMIT: usize = 2 * 1024 * 1024;

/// Layers limiting request bodies to `bytes` and telling [`JsonBody`] the figure.
pub fn limit(bytes: usize) -> (DefaultBodyLimit, axum::Extension<BodyLimit>) {
    (
        DefaultBodyLimit::max(bytes),
        axum::Extension(BodyLimit(bytes)),
    )
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        require_json_content_type(request.headers())?;
        let bytes = read_body(request).await?;
        parse(&bytes).map(Self)
    }
}

/// No `Content-Type` and no body means "no body"; anything else must be valid JSON.
impl<T, S> OptionalFromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Option<Self>, ApiError> {
        let has_content_type = request.headers().contains_key(header::CONTENT_TYPE);
        if has_content_type {
            require_json_content_type(request.headers())?;
        }
        let bytes = read_body(request).await?;
        if !has_content_type && bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !has_content_type {
            return Err(missing_content_type());
        }
        parse(&bytes).map(|value| Some(Self(value)))
    }
}

/// Read the whole body within the route's limit.
pub async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(AXUM_DEFAULT_LIMIT, |l| l.0);
    let (parts, body) = request.into_parts();
    read_limited(&parts.headers, body, limit).await
}

/// Read a whole body of at most `limit` bytes: `413` when it declares or turns out to be
/// longer (a declared length is refused before anything is read), `400 incomplete_body` when
/// it breaks off.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| body_error(&e, limit))
}

/// A JSON body of any shape, for handlers that validate the value themselves: `415` unless it
/// is declared JSON, `413` beyond `limit`, `400` unless it parses.
pub async fn read_value(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    require_json_content_type(headers)?;
    let bytes = read_limited(headers, body, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(&e))
}

fn body_error(error: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge { limit };
        }
        source = e.source();
    }
    ApiError::BadRequest {
        code: "incomplete_body",
        message: "the request body could not be read completely".into(),
    }
}

/// `application/json` or any `application/*+json`, with or without parameters.
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(missing_content_type());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let is_json = essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got `{essence}`"
        )))
    }
}

fn missing_content_type() -> ApiError {
    ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
}

/// Parse JSON text into `T`, mapping failures as [`JsonBody`] does. For handlers that need the
/// raw bytes too (e.g. to hash them for idempotency).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| describe(&e))?;
    deserializer.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = error.inner();
    if !matches!(inner.classify(), Category::Data) {
        return malformed(inner);
    }
    let path = match error.path().to_string() {
        root if root == "." => "(body)".to_owned(),
        path => path,
    };
    let message = strip_position(&inner.to_string());
    // The path of an unknown field already ends with its name; say only that it is unknown.
    if unknown_field_name(&message).is_some() {
        return ApiError::validation(path, "unknown field");
    }
    ApiError::validation(path, message)
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::BadRequest {
        code: "malformed_json",
        message: format!("the request body is not valid JSON: {error}"),
    }
}

/// serde_json appends " at line L column C"; the path says more to a client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn unknown_field_name(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::{HeaderValue, StatusCode};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: Option<String>,
        inner: Option<Inner>,
        tags: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: Option<u32>,
    }

    fn fields(error: ApiError) -> BTreeMap<String, String> {
        match error {
            ApiError::Validation(fields) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn wrong_types_are_named_by_path() {
        let e = parse::<Outer>(br#"{"inner": {"count": "x"}}"#).unwrap_err();
        assert!(fields(e).contains_key("inner.count"));
        let e = parse::<Outer>(br#"{"tags": ["a", 3]}"#).unwrap_err();
        assert!(fields(e).contains_key("tags[1]"));
    }

    #[test]
    fn unknown_fields_are_named_by_their_own_path() {
        let e = parse::<Outer>(br#"{"inner": {"count": 1, "extra": true}}"#).unwrap_err();
        assert_eq!(fields(e)["inner.extra"], "unknown field");
        let e = parse::<Outer>(br#"{"nmae": "x"}"#).unwrap_err();
        assert_eq!(fields(e)["nmae"], "unknown field");
    }

    #[test]
    fn broken_json_is_a_bad_request() {
        for body in [&br#"{"name": "#[..], b"", b"{} {}", b"\xff"] {
            let e = parse::<Outer>(body).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{body:?}");
            assert_eq!(e.code(), "malformed_json");
        }
    }

    #[test]
    fn a_top_level_type_error_has_a_readable_path() {
        let e = parse::<Outer>(br#""just a string""#).unwrap_err();
        let f = fields(e);
        assert!(f.contains_key("(body)"), "{f:?}");
    }

    fn headers_with_length(length: Option<usize>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(n) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        headers
    }

    #[tokio::test]
    async fn bodies_are_read_within_their_limit() {
        async fn read(length: Option<usize>, body: Body) -> Result<Bytes, ApiError> {
            read_limited(&headers_with_length(length), body, 8).await
        }
        assert_eq!(
            read(Some(8), Body::from("12345678")).await.unwrap(),
            "12345678"
        );
        // Declared too long: refused before a byte is read.
        let e = read(Some(9), Body::from("x")).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Undeclared, and longer than it may be once streamed.
        let chunks = ["12345", "6789"].map(|c| Ok::<_, std::io::Error>(Bytes::from(c)));
        let e = read(None, Body::from_stream(futures::stream::iter(chunks)))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Broken off by the client.
        let chunks = [
            Ok(Bytes::from("{")),
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ];
        let e = read(None, Body::from_stream(futures::stream::iter(chunks)))
            .await
            .unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "incomplete_body")
        );
    }

    #[tokio::test]
    async fn any_json_value_is_read_and_anything_else_named() {
        let mut headers = headers_with_length(None);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let value = read_value(&headers, Body::from(r#"{"a": [1, "b"]}"#), 64).await;
        assert_eq!(value.unwrap()["a"][1], "b");
        let e = read_value(&headers, Body::from("{"), 64).await.unwrap_err();
        assert_eq!(e.code(), "malformed_json");
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let e = read_value(&headers, Body::from("{}"), 64)
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(require_json_content_type(&headers).is_err());
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(require_json_content_type(&headers).is_ok(), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "multipart/form-data"] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            let e = require_json_content_type(&headers).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
    }
}
