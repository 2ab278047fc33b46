//! Responses as the plugin sees them: every remembered secret form redacted.
//!
//! A platform may echo what it was sent — a 401 quoting the `Authorization`
//! header, a debugging endpoint, a `TRACE`-like echo — and a plugin that reads
//! an injected value could transform it (reverse it, split it) beyond what
//! matching can catch and send it elsewhere. So before a response reaches the
//! plugin, every form the invocation's [`Scrubber`] remembers (of values of at
//! least [`MIN_MATCHED_BYTES`](super::scrub::MIN_MATCHED_BYTES)) is replaced by
//! `[redacted]`: in header values at once, and in the body as it streams, by a
//! [`Redactor`] that carries the last `longest form − 1` bytes over from one
//! chunk to the next. Since that may change the body's length (also through a
//! value remembered while it streams), `content-length` is dropped from every
//! response: the plugin reads a body to its end. The body's size limit is
//! enforced before this, on the bytes as they come from the network.
//!
//! The body also holds the [`InFlight`] guards of the values injected into its
//! request, so that they stay remembered while the platform may still echo
//! them.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};

use super::matcher::Redactor;
use super::scrub::{InFlight, Scrubber};

/// `response` with every remembered form redacted from its header values,
/// and its body redacted as it streams (see the module docs).
pub(super) fn redact<B>(
    response: http::Response<B>,
    scrubber: &Scrubber,
    in_flight: Vec<InFlight>,
) -> http::Response<Redacted<B>> {
    let (mut parts, body) = response.into_parts();
    redact_headers(&mut parts.headers, scrubber);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = Redacted {
        inner: body,
        redactor: scrubber.redactor(),
        scrubber: scrubber.clone(),
        trailers: None,
        done: false,
        _in_flight: in_flight,
    };
    http::Response::from_parts(parts, body)
}

/// Replaces every remembered form in the values of `headers`.
fn redact_headers(headers: &mut http::HeaderMap, scrubber: &Scrubber) {
    if !scrubber.remembers_any() {
        return;
    }
    for value in headers.values_mut() {
        if let Some(clean) = scrubber.redact(value.as_bytes()) {
            // The rest was a valid value and the mark is plain ASCII.
            if let Ok(clean) = http::HeaderValue::from_bytes(&clean) {
                *value = clean;
            } else {
                *value = http::HeaderValue::from_static(super::scrub::REDACTED);
            }
        }
    }
}

/// A response body with every remembered form redacted as it streams.
pub(super) struct Redacted<B> {
    inner: B,
    redactor: Redactor,
    scrubber: Scrubber,
    /// Trailers that arrived while bytes were still held back.
    trailers: Option<http::HeaderMap>,
    done: bool,
    _in_flight: Vec<InFlight>,
}

impl<B> std::fmt::Debug for Redacted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redacted")
            .field("redactor", &self.redactor)
            .finish_non_exhaustive()
    }
}

impl<B> Body for Redacted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.redactor.finish();
                    if rest.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let out = this.redactor.push(&data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Err(frame) => {
                    if let Ok(mut trailers) = frame.into_trailers() {
                        // Trailers end the body: what is held back goes first.
                        redact_headers(&mut trailers, &this.scrubber);
                        this.trailers = Some(trailers);
                        this.done = true;
                        let rest = this.redactor.finish();
                        if !rest.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;
    use crate::secret::SecretString;

    /// A body of the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    #[tokio::test]
    async fn bodies_and_headers_are_redacted_across_chunks() {
        let scrubber = Scrubber::default();
        let guard = scrubber
            .inject("token", &SecretString::from("tok-123456789"))
            .expect("room");
        let body = Chunks(
            [
                "{\"echo\":\"Bearer tok-1",
                "23456",
                "789\",\"upper\":\"TOK-123456789\",",
                "\"b64\":\"dG9rLTEyMzQ1Njc4OQ==\"}",
            ]
            .into_iter()
            .map(Bytes::from)
            .collect(),
        );
        let response = http::Response::builder()
            .header("x-echo", "token=tok-123456789")
            .header("content-length", "93")
            .header("x-other", "fine")
            .body(body)
            .expect("a response");
        let response = redact(response, &scrubber, vec![guard]);
        assert_eq!(response.headers()["x-echo"], "token=[redacted]");
        assert_eq!(response.headers()["x-other"], "fine");
        assert!(response.headers().get("content-length").is_none());
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        assert_eq!(
            std::str::from_utf8(&bytes).expect("utf-8"),
            "{\"echo\":\"Bearer [redacted]\",\"upper\":\"[redacted]\",\"b64\":\"[redacted]\"}"
        );
    }

    #[tokio::test]
    async fn nothing_remembered_leaves_the_body_as_it_is() {
        let scrubber = Scrubber::default();
        let body = Chunks([Bytes::from("plain")].into_iter().collect());
        let response = http::Response::builder()
            .header("x-plain", "plain")
            .body(body)
            .expect("a response");
        let response = redact(response, &scrubber, Vec::new());
        assert_eq!(response.headers()["x-plain"], "plain");
        let bytes = response.into_body().collect().await.expect("a body");
        assert_eq!(bytes.to_bytes(), "plain");
    }
}
