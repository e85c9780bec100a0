//! The request deadline (`limits.request_timeout_ms`): a request that runs
//! past it is answered for, and its handler dropped.
//!
//! Who was slow decides the answer. While the request's body is still
//! arriving the client is: `408`. Once the body is in, the service is (a
//! stalled disk, a dependency that does not answer): that is a fault like
//! any other outage, so `503` with `Retry-After`, and a log line. A bare
//! timeout layer cannot tell the two apart, so the body is watched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::error::{Problem, ProblemKind};

/// Runs `req` through `run` under the deadline `limit`, which starts now.
/// Called from the `observe` middleware rather than as a layer of its
/// own: one layer less on every request (a boxed future and the state's
/// clone each). A combinator, not an `async fn`, so the request is not
/// kept twice in the future (see `telemetry::measure_waits`).
pub fn within<F, Fut>(limit: Duration, req: Request, run: F) -> impl Future<Output = Response>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    use futures_util::FutureExt;
    // `None`: the request came whole (no body, or an empty one).
    let receiving =
        (!http_body::Body::is_end_stream(req.body())).then(|| Arc::new(AtomicBool::new(false)));
    let req = match &receiving {
        None => req,
        Some(received) => req.map(|inner| {
            Body::new(Watched {
                inner,
                received: received.clone(),
            })
        }),
    };
    tokio::time::timeout(limit, run(req)).map(move |ran| match ran {
        Ok(res) => res,
        Err(_) if receiving.is_some_and(|r| !r.load(Ordering::Relaxed)) => Problem::new(
            ProblemKind::RequestTimeout,
            "the request body did not arrive within limits.request_timeout_ms",
        )
        .into_response(),
        Err(_) => {
            Problem::unavailable(&"the request ran past limits.request_timeout_ms").into_response()
        }
    })
}

/// A request body that says when it has been read to its end.
struct Watched {
    inner: Body,
    received: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.received.store(true, Ordering::Relaxed);
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
