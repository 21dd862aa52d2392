//! Long-lived responses: server-sent events, long-polls, streaming bodies and upgraded
//! connections, which would otherwise hold a shutdown open until its timeout.
//!
//! [`Shutdown::layer`](crate::Shutdown::layer) already tracks every `text/event-stream`
//! response. Per request it costs a look at the body's size hint and, only for a body of
//! unknown length, one lookup of the response's `Content-Type` header; only responses found
//! long-lived pay for more (a registry entry under a lock, a wake-up registration). When the
//! drain begins:
//!
//! * **Server-sent events** end at the next boundary between events, after an optional final
//!   event (by default `event: shutdown`, `data: draining`, `retry: 1000`) so `EventSource`
//!   clients reconnect, one second later, to another instance. The body is never ended inside
//!   an event: one that has sent part of an event (an event split over several frames) goes
//!   on to the event's end first; comment lines (keep-alives) are part of no event. With
//!   axum's `Sse` (one frame per event) and any stream of `Bytes` per event, that is the next
//!   frame boundary.
//! * **Long-polls** on routes marked with [`LongLivedLayer::route`] find a [`DrainSignal`] in
//!   their request extensions and answer early; any task can get one from
//!   [`Shutdown::signal`](crate::Shutdown::signal).
//! * **Other streaming bodies** on marked routes keep running until the long-lived deadline
//!   (see [`Shutdown::set_long_lived_grace`](crate::Shutdown::set_long_lived_grace)), and are
//!   then aborted with an error, so the client sees a cut body, not a clean end.
//! * **Upgraded connections** (WebSockets) leave the server's view; hold a
//!   [`LongLivedGuard`] in the connection's task and close when its signal fires.
//!
//! Whatever is still running at the long-lived deadline is aborted and listed in
//! [`DrainReport::long_lived`](crate::DrainReport::long_lived) with its method, path, kind and
//! age, unless it can end whole at once: an event stream between events (one the server had
//! not polled since the drain began) still ends with its final event, an answer that comes
//! as the deadline passes is still sent whole, and an answer of known length whose bytes are
//! all out goes on to its end (its trailers, over HTTP/2). None of them is listed: the list
//! holds what was cut.

mod body;
mod guard;
mod layer;
mod registry;
mod signal;
mod watch;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::Method;

pub(crate) use body::{Next, TrackedState};
pub use guard::LongLivedGuard;
pub use layer::LongLivedLayer;
pub(crate) use registry::{EntryId, Registration, Registry};
pub use signal::DrainSignal;
pub(crate) use watch::Watch;

/// A boxed wake-up (the drain's start, the long-lived deadline), registered only by a long-lived
/// response or signal that is actually waiting. Behind `dyn` so that the types holding one
/// stay small and their drop glue is one call.
pub(crate) type Wait = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// What kind of long-lived response an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum LongLivedKind {
    /// A `text/event-stream` response.
    Sse,
    /// A marked route whose handler has not answered yet.
    LongPoll,
    /// A marked route sending its response body (other than server-sent events).
    Stream,
    /// An upgraded connection (WebSocket) held by a [`LongLivedGuard`].
    Upgrade,
}

impl LongLivedKind {
    /// `"sse"`, `"long_poll"`, `"stream"` or `"upgrade"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LongLivedKind::Sse => "sse",
            LongLivedKind::LongPoll => "long_poll",
            LongLivedKind::Stream => "stream",
            LongLivedKind::Upgrade => "upgrade",
        }
    }
}

impl fmt::Display for LongLivedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a long-lived response body does when the drain begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnDrain {
    /// End at the next frame boundary (for server-sent events, the next boundary between
    /// events), after the final event if one is configured; only an event stream gets one,
    /// since it is an SSE frame. The default for server-sent events, whose clients reconnect
    /// and resume. A gRPC response first passes on what its handler has ready (an answer
    /// already given completes whole), and ends when it waits for more: a gRPC-web one with
    /// the status UNAVAILABLE in its trailer frame, a gRPC one without a status (its client
    /// reads UNKNOWN), as the per-frame code builds no HTTP/2 trailers.
    Finish,
    /// Keep streaming until the long-lived deadline, then abort. The default for every other
    /// kind: a stream the client cannot resume should not be ended at drain start. The
    /// long-lived deadline comes before the drain timeout unless
    /// [`Shutdown::set_long_lived_grace`](crate::Shutdown::set_long_lived_grace) says
    /// otherwise, so such a stream gets less time than an unmarked one, which the drain
    /// counts like any request until the drain timeout.
    KeepUntilDeadline,
}

/// A long-lived response named in a [`DrainReport`](crate::DrainReport).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LongLivedEntry {
    /// The request method; `None` when the response was recognised by its content type alone
    /// (the request is gone by then, and keeping its method and path for every request
    /// would cost every request). Mark the route with [`LongLivedLayer::route`] to name it,
    /// inside or outside the layer that recognises it.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_fields::method")
    )]
    pub method: Option<Method>,
    /// The request path, under the same condition as `method`.
    pub path: Option<String>,
    /// What kind of response it was.
    pub kind: LongLivedKind,
    /// How long it had been running when it was cut: since its marked route first saw the
    /// request, or since the response was recognised. Zero for one that only began after the
    /// long-lived deadline and was cut at once.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "age_ms", serialize_with = "crate::serde_fields::millis")
    )]
    pub age: Duration,
}

impl fmt::Display for LongLivedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = self.method.as_ref().map_or("-", Method::as_str);
        let path = self.path.as_deref().unwrap_or("-");
        write!(f, "{} {method} {path} after {:?}", self.kind, self.age)
    }
}

/// A user rule for what is long-lived, besides `text/event-stream`: given a response's status
/// and headers, its kind, or `None` for "not long-lived by this rule".
///
/// Consulted only for responses whose body has no known length (a body of known length ends
/// by itself), so short responses never pay for it. Responses it selects are tracked like
/// server-sent events, but without method and path unless their route is marked too (see
/// [`LongLivedEntry::method`]), and
/// run until the long-lived deadline unless their kind is [`LongLivedKind::Sse`], which
/// finishes them on drain at their next frame boundary; only a `text/event-stream` response
/// gets the final event, since it is an SSE frame. A `text/event-stream` response is an event
/// stream whatever kind the rule gives it: that kind names it in reports, and it still
/// finishes on drain.
pub type Predicate = fn(http::StatusCode, &http::HeaderMap) -> Option<LongLivedKind>;

/// The final event sent by default before a server-sent event stream ends on drain.
pub const DEFAULT_FINAL_EVENT: &str = "event: shutdown\ndata: draining\nretry: 1000\n\n";

/// How a layer tracks long-lived responses. `Copy`: part of the layer's `Policy`.
///
/// The settings are held by a `'static` reference so that every response future carries
/// one pointer, not the settings themselves (see [`Tracking::with`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Track {
    /// No tracking.
    Off,
    /// Track responses whose content type is `text/event-stream`.
    Detect(&'static Tracking),
    /// Every request is long-lived (a marked route).
    Route(&'static Tracking),
}

impl Track {
    /// The same kind of tracking with changed settings.
    pub(crate) fn with(self, change: impl FnOnce(&mut Tracking)) -> Track {
        match self {
            Track::Off => Track::Off,
            Track::Detect(tracking) => Track::Detect(tracking.with(change)),
            Track::Route(tracking) => Track::Route(tracking.with(change)),
        }
    }
}

/// The per-layer settings of tracked responses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracking {
    /// Sent before a server-sent event stream ends on drain.
    pub(crate) final_event: Option<&'static str>,
    /// `None`: by kind (finish for SSE, keep for the rest).
    pub(crate) on_drain: Option<OnDrain>,
    /// `None`: decided from the response.
    pub(crate) kind: Option<LongLivedKind>,
    /// Decides what else is long-lived, from a response of unknown length.
    pub(crate) predicate: Option<Predicate>,
    /// The controller, for a layer that does not count: one that counts finds it in the
    /// request's in-flight guard, so its response futures need not carry it. Set only by
    /// `LongLivedLayer`.
    pub(crate) shutdown: Option<crate::Shutdown>,
    /// Set only on the settings of a bypassed path's responses (see
    /// [`Registry::bypassed_tracking`]): a gRPC stream there is not registered, and ends once
    /// the drain is over.
    pub(crate) bypassed: bool,
}

impl Tracking {
    pub(crate) const DEFAULT: &'static Tracking = &Tracking {
        final_event: Some(DEFAULT_FINAL_EVENT),
        on_drain: None,
        kind: None,
        predicate: None,
        shutdown: None,
        bypassed: false,
    };

    /// A changed copy, allocated once and kept for the life of the process, like the
    /// controller's state: builder methods run when the layer is built, at start-up, and the
    /// per-request path then carries a plain reference instead of the whole struct.
    pub(crate) fn with(&self, change: impl FnOnce(&mut Tracking)) -> &'static Tracking {
        let mut changed = *self;
        change(&mut changed);
        Box::leak(Box::new(changed))
    }
}

/// `event` ending in a blank line, as a whole SSE event must: clients discard an event not
/// ended by one when the stream ends. Called by the builders, at start-up; a fixed copy is
/// kept for the life of the process, like the settings that hold it.
pub(crate) fn whole_event(event: &'static str) -> &'static str {
    if event.ends_with("\n\n") || event.ends_with("\r\n\r\n") || event.ends_with("\r\r") {
        return event;
    }
    // A LF after a lone CR would make the pair one line end (CRLF), not the empty line.
    let end = if event.ends_with('\r') {
        "\r"
    } else if event.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    Box::leak(format!("{event}{end}").into_boxed_str())
}

/// True for a response whose body carries a content coding (gzip, br, ...): plain-text bytes
/// cannot be appended to it, nor can it be ended early without truncating the coded stream.
#[inline]
pub(crate) fn is_encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"))
}

const EVENT_STREAM: &[u8] = b"text/event-stream";

/// True for a `text/event-stream` response. The one check every tracked response pays.
#[inline]
pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.as_bytes().split_at_checked(EVENT_STREAM.len()))
        // Media types are case-insensitive, and compared whole: `text/event-streaming` is
        // another type. Parameters (`; charset=utf-8`) may follow, after optional whitespace.
        .is_some_and(|(essence, rest)| {
            essence.eq_ignore_ascii_case(EVENT_STREAM)
                && rest
                    .iter()
                    .find(|&&byte| byte != b' ' && byte != b'\t')
                    .is_none_or(|&byte| byte == b';')
        })
}

/// Set on a request's extensions by a marked route, beside the [`DrainSignal`] it hands the
/// handler, so that another mark of the same controller further in does not track the same
/// request twice. Zero-sized, so its insert allocates nothing: the signal names the controller
/// (see `DrainSignal::is_of`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AlreadyTracked;

/// Set on a response's extensions by the layer that tracks it, so that another layer of the
/// same controller further out does not track it twice; names the response's registry entry.
/// Entry ids are unique in the process, so a layer of another controller finds no entry of its
/// own under it (`Registry::holds`) and tracks the response in its own registry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackedResponse(pub(crate) EntryId);
