//! Streamed redaction: request body → lines → redacted lines → response
//! body, with bounded channels on both sides so memory stays flat whatever
//! the body's size.
//!
//! An async task reads the request; a blocking thread splits lines,
//! redacts them, audits any cards it tokenized, and sends output chunks;
//! the response body takes them as they come and ends with the findings as
//! a trailer. The response's head waits (up to a second) for the first
//! output, so an error before it (over the limit, vault down) is answered
//! as a problem; a later one (the same, or a client abort) sends an error
//! frame, which aborts the response: the client sees a truncated body,
//! never unredacted data.
//!
//! A client that stops sending, or stops reading, for `limits.stream_idle_ms`
//! ends its stream the same way: it must not hold a redaction thread.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::redact::format::RedactError;
use crate::redact::lines::{LineSplitter, Piece};

use super::error::{Problem, ProblemKind, REQUEST_ID};
use super::redact::{Job, redact_problem};

/// Chunks in flight on each side.
const DEPTH: usize = 4;
/// Output is sent once this much has built up (or the input chunk ends).
const FLUSH_BYTES: usize = 64 * 1024;
/// How long the head waits for the first output before going without it
/// (half the request's deadline if that is shorter: the deadline runs
/// until the head goes). A report (`?report=true`) has no output before
/// the whole body is read.
const FIRST_OUTPUT_WAIT: Duration = Duration::from_secs(1);

/// What the blocking side sends: a frame, or the problem that ended it.
type Out = Result<Frame<Bytes>, Problem>;

/// A response body fed by a channel: the frame that was awaited before
/// the head went (if it came in time), then data frames, then trailers. A
/// problem after the head is an error, which makes hyper abort the
/// response; so is a channel closed before the trailers (the worker
/// panicked), which would otherwise end the body as if it were whole.
struct ChannelBody {
    first: Option<Frame<Bytes>>,
    rx: mpsc::Receiver<Out>,
    /// The trailers, or an error, went out: nothing follows.
    ended: bool,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let next = match self.first.take() {
            Some(f) => Some(Ok(f)),
            None if self.ended => return Poll::Ready(None),
            None => std::task::ready!(self.rx.poll_recv(cx)),
        };
        let aborted = || std::io::Error::other("redaction aborted");
        Poll::Ready(Some(match next {
            Some(Ok(f)) => {
                self.ended = f.is_trailers();
                Ok(f)
            }
            Some(Err(_)) | None => {
                self.ended = true;
                Err(aborted())
            }
        }))
    }
}

/// Starts the stream and returns the response that carries it.
///
/// The head waits for the first output (a chunk of redacted lines, the
/// report, or the trailers of an empty body) for up to
/// `FIRST_OUTPUT_WAIT` (or half the request deadline, if shorter), so a
/// stream that fails early gets a problem
/// answer instead of a `200` cut short. The body's first frame is read
/// before anything: hyper answers `Expect: 100-continue` when a body is
/// first read, and not once the response's head has gone (curl asks for it
/// on bodies over 1 MiB and, given a `200` first, waited a second before
/// sending).
pub async fn respond(job: Job, mut body: Body) -> Response {
    let (in_tx, in_rx) = mpsc::channel::<Result<Bytes, Problem>>(DEPTH);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(DEPTH);
    let limit = job.state.limits.redact_stream_bytes;
    let job_deadline_ms = job.state.limits.request_timeout_ms;
    let idle = Duration::from_millis(job.state.limits.stream_idle_ms);
    let first = body.frame().await;
    tokio::spawn(read(first, body, limit, idle, in_tx));
    let report = job.opts.report;
    let format = job.format;
    tokio::task::spawn_blocking(move || {
        // The request id is task-local: give it to this thread's logs too.
        let id = job.request_id.clone();
        REQUEST_ID.sync_scope(id, || work(job, in_rx, out_tx))
    });
    // Half the request's deadline at most, so a short one is still met.
    let deadline = Duration::from_millis(job_deadline_ms / 2);
    let first = match tokio::time::timeout(FIRST_OUTPUT_WAIT.min(deadline), out_rx.recv()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(Some(Err(problem))) => return problem.into_response(),
        // The worker ended without a word: it panicked.
        Ok(None) => return Problem::internal(&"redaction task failed").into_response(),
        // Still working (a report, or a slow body): the head goes now.
        Err(_) => None,
    };
    let mut res = Body::new(ChannelBody {
        first,
        rx: out_rx,
        ended: false,
    })
    .into_response();
    let h = res.headers_mut();
    let ct = if report {
        "application/json"
    } else {
        format.content_type()
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(
        header::TRAILER,
        HeaderValue::from_static("tokenvault-findings"),
    );
    res
}

/// Forwards the request body from its `first` frame on, enforcing `limit`
/// and ending it when the client sends nothing for `idle`.
async fn read(
    first: Option<Result<Frame<Bytes>, axum::Error>>,
    mut body: Body,
    limit: u64,
    idle: Duration,
    tx: mpsc::Sender<Result<Bytes, Problem>>,
) {
    let mut total = 0u64;
    let mut first = Some(first);
    loop {
        let frame = match first.take() {
            Some(f) => f,
            None => match tokio::time::timeout(idle, body.frame()).await {
                Ok(f) => f,
                Err(_) => {
                    let stalled = Problem::new(
                        ProblemKind::RequestTimeout,
                        "no body arrived for limits.stream_idle_ms",
                    );
                    let _ = tx.send(Err(stalled)).await;
                    return;
                }
            },
        };
        let Some(frame) = frame else { return };
        let item = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => {
                    total += d.len() as u64;
                    if total > limit {
                        Err(Problem::new(
                            ProblemKind::PayloadTooLarge,
                            "the body is over limits.redact_stream_bytes",
                        ))
                    } else {
                        Ok(d)
                    }
                }
                Err(_) => continue,
            },
            Err(e) => Err(Problem::new(
                ProblemKind::InvalidRequest,
                format!("reading the body failed: {e}"),
            )),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// The blocking side: split, redact, audit, send.
fn work(job: Job, mut rx: mpsc::Receiver<Result<Bytes, Problem>>, tx: mpsc::Sender<Out>) {
    let handle = tokio::runtime::Handle::current();
    let idle = Duration::from_millis(job.state.limits.stream_idle_ms);
    // Sends, unless the client is gone or has read nothing for `idle`.
    let send = |out: Out| -> bool {
        match handle.block_on(tokio::time::timeout(idle, tx.send(out))) {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::warn!(request_id = %job.request_id, "streamed redaction ended: the client read nothing for limits.stream_idle_ms");
                false
            }
        }
    };
    let tokenizer = job.tokenizer();
    let abort = |why: Problem| {
        let detail = why.detail.as_deref().unwrap_or(why.kind.slug());
        tracing::warn!(request_id = %job.request_id, error = %detail, "streamed redaction aborted");
        // Cards tokenized before the failure have their tokens: audit them
        // anyway.
        let _ = tokenizer.settle();
        send(Err(why));
    };
    let mut session = job
        .state
        .redactor
        .session(&job.opts, Some(&tokenizer as &dyn crate::redact::Tokenizer));
    let mut splitter = LineSplitter::new(job.state.limits.body_bytes);
    let mut out = Vec::with_capacity(FLUSH_BYTES * 2);
    let mut total = 0usize;
    let format = job.format;
    let report = job.opts.report;
    let mut take = |piece: Piece<'_>, out: &mut Vec<u8>| -> Result<(), RedactError> {
        session.piece(format, piece, out)
    };
    // Sends what has built up, after auditing the cards it tokenized.
    let flush = |out: &mut Vec<u8>| -> Result<bool, Problem> {
        tokenizer.settle()?;
        if tx.is_closed() {
            return Ok(false); // the client went away
        }
        if out.is_empty() || report {
            return Ok(true);
        }
        let chunk = Bytes::from(std::mem::take(out));
        Ok(send(Ok(Frame::data(chunk))))
    };
    while let Some(item) = rx.blocking_recv() {
        let chunk = match item {
            Ok(c) => c,
            Err(why) => return abort(why),
        };
        total += chunk.len();
        if let Err(e) = splitter.push(&chunk, |p| take(p, &mut out)) {
            return abort(redact_problem(&e));
        }
        if out.len() >= FLUSH_BYTES || rx.is_empty() {
            match flush(&mut out) {
                Ok(true) => {}
                Ok(false) => return, // the client went away
                Err(why) => return abort(why),
            }
        }
    }
    if let Err(e) = splitter.finish(|p| take(p, &mut out)) {
        return abort(redact_problem(&e));
    }
    match flush(&mut out) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => return abort(why),
    }
    let findings = session.findings.clone();
    job.count(total, &findings);
    if report {
        let body = serde_json::to_vec(&findings.report()).expect("serializable");
        if !send(Ok(Frame::data(Bytes::from(body)))) {
            return;
        }
    }
    let mut trailers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&findings.header_value()) {
        trailers.insert("tokenvault-findings", v);
    }
    send(Ok(Frame::trailers(trailers)));
}
