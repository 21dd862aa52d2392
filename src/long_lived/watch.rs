//! The response future's part of tracking: register a marked route at the call, classify
//! the response when it arrives.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;

use super::{
    is_encoded, is_event_stream, AlreadyTracked, DrainSignal, LongLivedKind, Registration, Track,
    TrackedResponse, TrackedState, Tracking, Wait,
};
use crate::core::Core;
use crate::middleware::rejection::{self, Closing, GrpcEnd, Rejection};
use crate::static_body::head_only;
use crate::Shutdown;

/// Carried by a response future from the call until the response exists.
///
/// Two words, and dropping it is a null check: every response future carries one, so the
/// rare state (a marked route, registered since the call) is boxed behind an `Option`.
#[derive(Default)]
pub(crate) struct Watch {
    /// Look at the response's content type with these settings.
    detect: Option<&'static Tracking>,
    /// A marked route: registered since the call.
    route: Option<Box<RouteWatch>>,
}

pub(crate) struct RouteWatch {
    core: &'static Core,
    registration: Registration,
    tracking: &'static Tracking,
    /// How a 503 answered at the deadline closes the request's connection.
    closing: Closing,
    /// Whether the request is a `HEAD`, whose 503 must go without its body.
    head: bool,
    /// Registered the first time the handler is pending: wakes it at the long-lived deadline.
    /// Behind `dyn` to keep `Watch`'s drop glue small: every response future has one.
    deadline: Option<Wait>,
}

impl Watch {
    /// The watch of an ordinary request: a match on the policy, nothing else.
    #[inline]
    pub(crate) fn detect(track: Track) -> Watch {
        match track {
            Track::Detect(tracking) => Watch {
                detect: Some(tracking),
                route: None,
            },
            Track::Off | Track::Route(_) => Watch::default(),
        }
    }

    /// The watch of a request on a bypassed path (a probe) under a layer that counts: its
    /// response is never counted nor registered, but a gRPC stream (a health `Watch`, which
    /// clients doing client-side health checking keep open on every server) ends once the
    /// drain is over, so that it does not hold its connection, and the server, open after
    /// everything counted has finished. Only bypassed requests pay for it.
    #[cold]
    #[inline(never)]
    pub(crate) fn bypassed(core: &'static Core) -> Watch {
        Watch {
            detect: Some(core.long_lived.bypassed_tracking(core)),
            route: None,
        }
    }

    /// Registers a request on a marked route, with its method and path, and hands its
    /// handler a [`DrainSignal`].
    ///
    /// Never inlined: kept out of `DrainService::call`, whose common path then does not
    /// copy the request aside for it.
    #[cold]
    #[inline(never)]
    pub(crate) fn route<B>(
        tracking: &'static Tracking,
        core: &'static Core,
        mut request: Request<B>,
    ) -> (Request<B>, Watch) {
        // Marked by a route layer of this controller further out (a route's own layer under
        // the router's `route_layer`): that one tracks it, or the request would be two entries.
        let extensions = request.extensions();
        if extensions.get::<AlreadyTracked>().is_some()
            && extensions
                .get::<DrainSignal>()
                .is_some_and(|signal| signal.is_of(core))
        {
            return (request, Watch::default());
        }
        let kind = tracking.kind.unwrap_or(LongLivedKind::LongPoll);
        let registration = core.long_lived.register(
            kind,
            Some(request.method().clone()),
            Some(request.uri().path().to_owned()),
        );
        let extensions = request.extensions_mut();
        extensions.insert(DrainSignal::new(Shutdown { core }));
        // A zero-sized marker: no allocation of its own.
        extensions.insert(AlreadyTracked);
        let watch = Watch {
            detect: None,
            route: Some(Box::new(RouteWatch {
                core,
                registration,
                tracking,
                closing: Closing::for_version(request.version()),
                head: request.method() == Method::HEAD,
                deadline: None,
            })),
        };
        (request, watch)
    }

    /// Called while the handler is pending. A marked route's handler still waiting at the
    /// long-lived deadline (it ignored its `DrainSignal`) is answered for it with a 503, and
    /// then dropped with the response future; everything else stays pending.
    #[inline]
    pub(crate) fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<Response<Rejection>> {
        match &mut self.route {
            Some(route) => route.poll_cut(cx),
            None => Poll::Pending,
        }
    }

    /// Decides whether `response`'s body is tracked; `counted_by` is the controller that
    /// counts the request, if any.
    ///
    /// Cost for a short response under [`Shutdown::layer`]: a look at the body's size hint
    /// and, only for a body of unknown length, the user's rule if there is one and one lookup
    /// of a standard header. A body of known length ends by itself and is never long-lived.
    #[inline]
    pub(crate) fn classify<B: Body>(
        &mut self,
        response: &mut Response<B>,
        counted_by: Option<&'static Core>,
    ) -> Option<Box<TrackedState>> {
        if let Some(route) = self.route.take() {
            let RouteWatch {
                core,
                mut registration,
                tracking,
                head,
                ..
            } = *route;
            // The answer to a `HEAD` is its head: whole once made, and its body never polled
            // (axum swaps it for an empty one further out).
            if head {
                registration.sent_whole();
            }
            return Self::routed(core, registration, tracking, response);
        }
        let tracking = self.detect?;
        if response.body().size_hint().exact().is_some() {
            return None;
        }
        let kind = match tracking.predicate {
            None => None,
            Some(predicate) => predicate(response.status(), response.headers()),
        };
        let kind = match kind {
            Some(kind) => kind,
            None if is_event_stream(response.headers()) => LongLivedKind::Sse,
            None => return None,
        };
        let core = tracking.shutdown.map(|shutdown| shutdown.core);
        Self::detected(core.or(counted_by)?, tracking, kind, response)
    }

    #[cold]
    fn detected<B>(
        core: &'static Core,
        tracking: &'static Tracking,
        kind: LongLivedKind,
        response: &mut Response<B>,
    ) -> Option<Box<TrackedState>> {
        // Another layer of this controller, further in, already tracks it (a marked route, or
        // a `LongLivedLayer` under `Shutdown::layer`): one entry per response. One of another
        // controller does not: this one's drain must still ask the response to finish.
        if response
            .extensions()
            .get::<TrackedResponse>()
            .is_some_and(|&TrackedResponse(entry)| core.long_lived.holds(entry))
        {
            return None;
        }
        if tracking.bypassed {
            // A probe's response: not registered, so never counted as long-lived nor listed
            // as cut. Only a gRPC stream is ended (between its messages, which a client reads
            // as a failed call); a stream of another protocol ended early would look whole.
            return GrpcEnd::for_response(response.headers())
                .map(|end| TrackedState::until_drain_over(core, end));
        }
        // The layer's kind only names the entry. The rule's names it too, and decides the
        // default on drain (a stream it calls `Sse` finishes), but the bytes are read as
        // events only in an event stream, which finishes on drain whatever a rule calls it.
        let registration = core
            .long_lived
            .register(tracking.kind.unwrap_or(kind), None, None);
        // Marked even by a layer that is usually outermost: a layer of this controller further
        // out (the `Shutdown::layer` of a router this one is nested in, a marked route's
        // `route_layer` added after it) would otherwise register the same response again. The mark names
        // the entry, which a marked route further out names in turn. The insert allocates,
        // once per long-lived response.
        response
            .extensions_mut()
            .insert(TrackedResponse(registration.entry()));
        let event_stream = is_event_stream(response.headers());
        let kind = if event_stream {
            LongLivedKind::Sse
        } else {
            kind
        };
        // Only bodies of unknown length get here. Bytes of a coded body say nothing of its
        // events, and a plain-text final event cannot be appended to it.
        let encoded = is_encoded(response.headers());
        let grpc_end = GrpcEnd::for_response(response.headers());
        Some(TrackedState::new(
            core,
            registration,
            kind,
            event_stream && !encoded,
            tracking,
            None,
            grpc_end,
        ))
    }

    #[cold]
    fn routed<B: Body>(
        core: &'static Core,
        registration: Registration,
        tracking: &'static Tracking,
        response: &mut Response<B>,
    ) -> Option<Box<TrackedState>> {
        // A layer of this controller further in already tracks the response (by its content
        // type, or a rule): its entry is the one kept, so that the response is one entry, and
        // it takes this route's name, which that layer could not know. This route's entry
        // leaves as it hands the name over.
        let inner = response
            .extensions()
            .get::<TrackedResponse>()
            .map(|&TrackedResponse(entry)| entry)
            .filter(|&entry| core.long_lived.holds(entry));
        if let Some(inner) = inner {
            registration.hand_name_to(inner, tracking.kind);
            return None;
        }
        // What the response is decides what its body does on drain; the layer's kind, if
        // set, only names it in reports.
        let event_stream = is_event_stream(response.headers());
        let kind = if event_stream {
            LongLivedKind::Sse
        } else {
            LongLivedKind::Stream
        };
        if tracking.kind.is_none() {
            registration.set_kind(kind);
        }
        response
            .extensions_mut()
            .insert(TrackedResponse(registration.entry()));
        let length = response.body().size_hint().exact();
        let encoded = is_encoded(response.headers());
        let grpc_end = GrpcEnd::for_response(response.headers());
        Some(TrackedState::new(
            core,
            registration,
            kind,
            event_stream && !encoded,
            tracking,
            length,
            grpc_end,
        ))
    }
}

impl RouteWatch {
    #[cold]
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<Response<Rejection>> {
        let expired = self.core.long_lived.expired();
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(expired.cancelled()) as Pin<Box<_>>);
        ready!(deadline.as_mut().poll(cx));
        let cut = rejection::long_lived_cut(self.closing);
        Poll::Ready(if self.head { head_only(cut) } else { cut })
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.route.is_some(), self.detect.is_some()) {
            (true, _) => "route",
            (false, true) => "detect",
            (false, false) => "off",
        };
        f.write_str(name)
    }
}
