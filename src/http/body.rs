//! Request bodies a handler left unread.
//!
//! Many answers are given before the body is read: a rate limit, a wrong content type, a
//! missing token, a body over its limit. HTTP/1.1 can only carry the client's next request on
//! the same connection once this one's body has been read, and hyper, finding a body still
//! arriving after the answer, closes the connection without saying so. A client that has
//! already sent its next request on it then gets a broken connection instead of an answer.
//!
//! So every request's body is [`track`]ed: if the handler drops it unread, it comes back, and
//! [`finish`] reads what is left (at most [`DRAIN_LIMIT`], for at most [`DRAIN_WAIT`]) before
//! the answer goes out. A longer or slower remainder, or a body refused as too large (`413`), is
//! not read on: the answer then says `Connection: close`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot;

/// The most of an unread body that is read to keep its connection; the public contract's
/// largest body (a report) fits.
pub const DRAIN_LIMIT: usize = 64 * 1024;

/// How long the rest of an unread body may take to arrive before the answer goes out without
/// it (and ends the connection).
pub const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// A request body that hands itself back if it is dropped before its end.
struct Tracked {
    inner: Body,
    back: Option<oneshot::Sender<Body>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // Read to its end, or the client went away: nothing to hand back.
            this.back = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(back) = self.back.take()
            && !self.inner.is_end_stream()
        {
            let rest = std::mem::take(&mut self.inner);
            // The receiver is gone only once the answer went out; nothing to do then.
            drop(back.send(rest));
        }
    }
}

/// What is left of the body once the handler has answered; see [`finish`].
pub struct Unread(Option<oneshot::Receiver<Body>>);

/// Give `request` a body that comes back to [`finish`] if the handler drops it unread. A
/// request without a body is left as it is.
pub fn track(request: Request) -> (Request, Unread) {
    if request.body().is_end_stream() {
        return (request, Unread(None));
    }
    let (back, unread) = oneshot::channel();
    let request = request.map(|inner| {
        Body::new(Tracked {
            inner,
            back: Some(back),
        })
    });
    (request, Unread(Some(unread)))
}

/// Read and drop what the handler left of the body, so the connection can carry the client's
/// next request; where that is not worth it, mark `response` as the connection's last.
pub async fn finish(unread: Unread, response: &mut Response) {
    let Some(rest) = unread.0.and_then(|mut r| r.try_recv().ok()) else {
        return;
    };
    // A body refused as too large is not read on; nor one that says it is longer than the limit.
    let too_long = response.status() == StatusCode::PAYLOAD_TOO_LARGE
        || rest
            .size_hint()
            .upper()
            .is_some_and(|n| n > DRAIN_LIMIT as u64);
    let drained = !too_long
        && tokio::time::timeout(DRAIN_WAIT, axum::body::to_bytes(rest, DRAIN_LIMIT))
            .await
            .is_ok_and(|read| read.is_ok());
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;

    use super::*;

    fn request(body: &'static str) -> Request {
        Request::builder()
            .method("POST")
            .uri("/")
            .body(Body::from(body))
            .unwrap()
    }

    async fn answered(unread: Unread) -> Response {
        let mut response = "answer".into_response();
        finish(unread, &mut response).await;
        response
    }

    #[tokio::test]
    async fn a_body_read_by_the_handler_is_not_read_again() {
        let (request, unread) = track(request("{\"a\": 1}"));
        let bytes = axum::body::to_bytes(request.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"{\"a\": 1}");
        assert!(unread.0.unwrap().try_recv().is_err(), "nothing comes back");
    }

    #[tokio::test]
    async fn a_body_dropped_unread_comes_back_and_is_read() {
        let (request, mut unread) = track(request("{\"a\": 1}"));
        drop(request);
        let rest = unread.0.as_mut().unwrap().try_recv().unwrap();
        assert_eq!(
            &axum::body::to_bytes(rest, 1024).await.unwrap()[..],
            b"{\"a\": 1}"
        );
    }

    #[tokio::test]
    async fn a_short_unread_body_keeps_the_connection_and_a_long_one_ends_it() {
        let (request, unread) = track(request("short"));
        drop(request);
        let response = answered(unread).await;
        assert!(!response.headers().contains_key(header::CONNECTION));

        let long: &'static str = "x".repeat(DRAIN_LIMIT + 1).leak();
        let (request, unread) = track(self::request(long));
        drop(request);
        let response = answered(unread).await;
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_body_refused_as_too_large_is_not_read_on() {
        let (request, unread) = track(request("short, but refused"));
        drop(request);
        let mut response = StatusCode::PAYLOAD_TOO_LARGE.into_response();
        finish(unread, &mut response).await;
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_request_without_a_body_is_not_tracked() {
        let (_, unread) = track(Request::new(Body::empty()));
        assert!(unread.0.is_none());
    }
}
