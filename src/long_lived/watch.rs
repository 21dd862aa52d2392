//! The response future's part of tracking: register a marked route at the call, classify
//! the response when it arrives.

use std::fmt;

use http::{Request, Response};

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
    Detect {
        core: &'static Core,
        tracking: Tracking,
    },
    /// A marked route: registered since the call.
    Route {
        core: &'static Core,
        registration: Registration,
        tracking: Tracking,
    },
}

impl Watch {
    /// Cost for everything but a marked route: a match on the policy, nothing else.
    #[inline]
    pub(crate) fn start<B>(track: Track, core: &'static Core, request: &mut Request<B>) -> Watch {
        match track {
            Track::Off => Watch::Off,
            Track::Detect(tracking) => Watch::Detect { core, tracking },
            Track::Route(tracking) => Watch::route(tracking, core, request),
        }
    }

    #[cold]
    fn route<B>(tracking: Tracking, core: &'static Core, request: &mut Request<B>) -> Watch {
        let kind = tracking.kind.unwrap_or(LongLivedKind::LongPoll);
        let registration = core.long_lived.register(
            kind,
            Some(request.method().clone()),
            Some(request.uri().path().to_owned()),
        );
        request
            .extensions_mut()
            .insert(DrainSignal::new(Shutdown { core }));
        Watch::Route {
            core,
            registration,
            tracking,
        }
    }

    /// Decides whether `response`'s body is tracked. Cost for a short response under
    /// [`Shutdown::layer`]: one lookup of a standard header and a branch.
    #[inline]
    pub(crate) fn classify<B>(self, response: &mut Response<B>) -> Option<Box<TrackedState>> {
        match self {
            Watch::Off => None,
            Watch::Detect { core, tracking } => {
                if !is_event_stream(response.headers()) {
                    return None;
                }
                Self::detected(core, tracking, response)
            }
            Watch::Route {
                core,
                registration,
                tracking,
            } => Some(Self::routed(core, registration, tracking, response)),
        }
    }

    #[cold]
    fn detected<B>(
        core: &'static Core,
        tracking: Tracking,
        response: &Response<B>,
    ) -> Option<Box<TrackedState>> {
        if response.extensions().get::<AlreadyTracked>().is_some() {
            return None;
        }
        let kind = tracking.kind.unwrap_or(LongLivedKind::Sse);
        let registration = core.long_lived.register(kind, None, None);
        Some(TrackedState::new(core, registration, kind, tracking))
    }

    #[cold]
    fn routed<B>(
        core: &'static Core,
        registration: Registration,
        tracking: Tracking,
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
            Watch::Detect { .. } => "detect",
            Watch::Route { .. } => "route",
        };
        f.write_str(name)
    }
}
