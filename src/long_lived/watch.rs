//! The response future's part of tracking: register a marked route at the call, classify
//! the response when it arrives.

use std::fmt;

use http::{Request, Response};
use http_body::Body;

use super::{
    is_event_stream, AlreadyTracked, DrainSignal, LongLivedKind, Registration, Track, TrackedState,
    Tracking,
};
use crate::shutdown::Core;
use crate::Shutdown;

/// Carried by a response future from the call until the response exists.
pub(crate) enum Watch {
    Off,
    /// Look at the response's content type.
    Detect(&'static Tracking),
    /// A marked route: registered since the call. Boxed so the common variants stay small:
    /// every response future carries a `Watch`.
    Route(Box<RouteWatch>),
}

pub(crate) struct RouteWatch {
    core: &'static Core,
    registration: Registration,
    tracking: &'static Tracking,
}

impl Watch {
    /// The watch of an ordinary request: a match on the policy, nothing else.
    #[inline]
    pub(crate) fn detect(track: Track) -> Watch {
        match track {
            Track::Detect(tracking) => Watch::Detect(tracking),
            Track::Off | Track::Route(_) => Watch::Off,
        }
    }

    /// Registers a request on a marked route, with its method and path, and hands its
    /// handler a [`DrainSignal`].
    #[cold]
    pub(crate) fn route<B>(
        tracking: &'static Tracking,
        core: &'static Core,
        mut request: Request<B>,
    ) -> (Request<B>, Watch) {
        let kind = tracking.kind.unwrap_or(LongLivedKind::LongPoll);
        let registration = core.long_lived.register(
            kind,
            Some(request.method().clone()),
            Some(request.uri().path().to_owned()),
        );
        request
            .extensions_mut()
            .insert(DrainSignal::new(Shutdown { core }));
        let watch = Watch::Route(Box::new(RouteWatch {
            core,
            registration,
            tracking,
        }));
        (request, watch)
    }

    /// Takes the watch out, leaving `Off`.
    #[inline]
    pub(crate) fn take(&mut self) -> Watch {
        std::mem::replace(self, Watch::Off)
    }

    /// Decides whether `response`'s body is tracked; `counted_by` is the controller that
    /// counts the request, if any.
    ///
    /// Cost for a short response under [`Shutdown::layer`]: a look at the body's size hint
    /// and, only for a body of unknown length, the user's rule if there is one and one lookup
    /// of a standard header. A body of known length ends by itself and is never long-lived.
    #[inline]
    pub(crate) fn classify<B: Body>(
        self,
        response: &mut Response<B>,
        counted_by: Option<&'static Core>,
    ) -> Option<Box<TrackedState>> {
        match self {
            Watch::Off => None,
            Watch::Detect(tracking) => {
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
            Watch::Route(route) => {
                let RouteWatch {
                    core,
                    registration,
                    tracking,
                } = *route;
                Some(Self::routed(core, registration, tracking, response))
            }
        }
    }

    #[cold]
    fn detected<B>(
        core: &'static Core,
        tracking: &'static Tracking,
        kind: LongLivedKind,
        response: &mut Response<B>,
    ) -> Option<Box<TrackedState>> {
        // Another layer of this crate, further in, already tracks it (a marked route, or a
        // `LongLivedLayer` under `Shutdown::layer`): one entry per response.
        if response.extensions().get::<AlreadyTracked>().is_some() {
            return None;
        }
        response.extensions_mut().insert(AlreadyTracked);
        let kind = tracking.kind.unwrap_or(kind);
        let registration = core.long_lived.register(kind, None, None);
        Some(TrackedState::new(core, registration, kind, tracking))
    }

    #[cold]
    fn routed<B>(
        core: &'static Core,
        registration: Registration,
        tracking: &'static Tracking,
        response: &mut Response<B>,
    ) -> Box<TrackedState> {
        let kind = tracking
            .kind
            .unwrap_or(if is_event_stream(response.headers()) {
                LongLivedKind::Sse
            } else {
                LongLivedKind::Stream
            });
        registration.set_kind(kind);
        response.extensions_mut().insert(AlreadyTracked);
        TrackedState::new(core, registration, kind, tracking)
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Watch::Off => "off",
            Watch::Detect(_) => "detect",
            Watch::Route(_) => "route",
        };
        f.write_str(name)
    }
}
