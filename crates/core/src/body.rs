//! [`Body`]: the one body type every Rampart service speaks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// The error type carried through every Rampart service and body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body: buffered bytes, or a boxed stream.
///
/// `Body` is `Send + Unpin` (the hyper client needs `Unpin`) but not `Sync`. Buffered bytes can be
/// read without polling through [`Body::as_bytes`], which lets layers inspect small bodies for free.
pub struct Body {
    inner: Inner,
}

enum Inner {
    /// Buffered bytes; `None` once yielded.
    Full(Option<Bytes>),
    /// Any other body, boxed once.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }

    /// A buffered body.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Full(if bytes.is_empty() { None } else { Some(bytes) }),
        }
    }

    /// A body holding `value` serialised as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(v) => Self::from_bytes(v),
            // Serialising our own plain data types cannot fail; an empty body is the safe answer.
            Err(_) => Self::empty(),
        }
    }

    /// Wraps any `http_body::Body` with `Bytes` frames (hyper's `Incoming`, axum's body,
    /// `Full<Bytes>`, a `StreamBody`, ...).
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: Inner::Stream(body.map_err(Into::into).boxed_unsync()),
        }
    }

    /// The buffered bytes, when this body is buffered and has not been polled yet.
    /// An empty buffered body gives `Some` of an empty slice.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Full(Some(b)) => Some(b.as_ref()),
            Inner::Full(None) => Some(&[]),
            Inner::Stream(_) => None,
        }
    }

    /// The buffered bytes as `Bytes` (a cheap clone), when buffered and unpolled.
    pub fn to_bytes(&self) -> Option<Bytes> {
        match &self.inner {
            Inner::Full(Some(b)) => Some(b.clone()),
            Inner::Full(None) => Some(Bytes::new()),
            Inner::Stream(_) => None,
        }
    }

    /// Reads the whole body, refusing more than `limit` bytes.
    pub async fn collect_limited(self, limit: usize) -> Result<Bytes, CollectError> {
        match self.inner {
            Inner::Full(b) => {
                let b = b.unwrap_or_default();
                if b.len() > limit {
                    Err(CollectError::TooLarge { limit })
                } else {
                    Ok(b)
                }
            }
            Inner::Stream(mut s) => {
                // A plain loop rather than `Limited`: keeps this future free of generic
                // `Into<BoxError>` bounds, which trip rustc's `Send` inference in callers.
                if http_body::Body::size_hint(&s).lower() > limit as u64 {
                    return Err(CollectError::TooLarge { limit });
                }
                // The first frame is kept as is (often the whole body): no copy unless more
                // frames follow.
                let mut first: Option<Bytes> = None;
                let mut buf = bytes::BytesMut::new();
                while let Some(frame) = s.frame().await {
                    let frame = frame.map_err(CollectError::Read)?;
                    if let Ok(data) = frame.into_data() {
                        let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
                        if have + data.len() > limit {
                            return Err(CollectError::TooLarge { limit });
                        }
                        match first.take() {
                            None if buf.is_empty() => first = Some(data),
                            prev => {
                                if let Some(prev) = prev {
                                    buf.extend_from_slice(&prev);
                                }
                                buf.extend_from_slice(&data);
                            }
                        }
                    }
                }
                Ok(first.unwrap_or_else(|| buf.freeze()))
            }
        }
    }
}

/// Reads any body to the end, refusing more than `limit` bytes (with or without a
/// `Content-Length`).
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if let Some(upper) = body.size_hint().upper()
        && upper > limit as u64
        && body.size_hint().lower() > limit as u64
    {
        return Err(CollectError::TooLarge { limit });
    }
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(CollectError::TooLarge { limit })
            } else {
                Err(CollectError::Read(e))
            }
        }
    }
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// More than the limit arrived.
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body failed while being read.
    #[error("failed to read the body: {0}")]
    Read(BoxError),
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Full(b) => f
                .debug_struct("Body::Full")
                .field("len", &b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self::from_bytes(b)
    }
}
impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::from_bytes(s)
    }
}
impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::from_bytes(Bytes::from_static(s.as_bytes()))
    }
}
impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Self::from_bytes(v)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(s) => s.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn buffered_bytes_are_visible_without_polling() {
        let b = Body::from_bytes("hello");
        assert_eq!(b.as_bytes(), Some(&b"hello"[..]));
        assert_eq!(b.collect_limited(5).await.unwrap(), "hello");
    }

    #[tokio::test]
    async fn limit_applies_to_buffered_and_streamed_bodies() {
        let b = Body::from_bytes("hello");
        assert!(matches!(
            b.collect_limited(4).await,
            Err(CollectError::TooLarge { limit: 4 })
        ));
        // A stream without a known length (like chunked encoding).
        let chunks = futures_util::stream::iter(
            (0..10)
                .map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"0123456789")))),
        );
        let b = Body::new(StreamBody::new(chunks));
        assert!(b.as_bytes().is_none());
        assert!(matches!(
            b.collect_limited(50).await,
            Err(CollectError::TooLarge { limit: 50 })
        ));
        let b = Body::new(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(b.collect_limited(50).await.unwrap(), "abc");
        // Several frames are joined in order; exactly the limit is accepted.
        let chunks = futures_util::stream::iter(
            ["ab", "cd", "ef"]
                .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c.as_bytes())))),
        );
        let b = Body::new(StreamBody::new(chunks));
        assert_eq!(b.collect_limited(6).await.unwrap(), "abcdef");
    }
}
