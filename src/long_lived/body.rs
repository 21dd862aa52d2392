//! What a tracked (long-lived) response body does beyond counting: end server-sent events at
//! a frame boundary when the drain begins, abort the rest at the long-lived deadline.

use std::task::{Context, Poll};

use super::{LongLivedKind, OnDrain, Registration, Tracking, Wait};
use crate::guard::InFlightGuard;
use crate::shutdown::Core;
use crate::Shutdown;

/// The state of one tracked body. Boxed inside the response body, so short responses do not
/// carry its size.
pub(crate) struct TrackedState {
    core: &'static Core,
    /// Dropped when the body ends, errors or is dropped: the entry leaves the registry.
    registration: Option<Registration>,
    on_drain: OnDrain,
    final_event: Option<&'static str>,
    /// Registered only when the inner body is pending: wakes it at drain start (to finish) or
    /// at the long-lived deadline (to abort).
    wait: Option<(Target, Wait)>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Closing,
    Expired,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    /// The final event has been handed out; the next poll ends the stream.
    Finishing,
    Done,
}

/// What the body should do before asking the inner body for another frame.
enum Step {
    Continue,
    Finish,
    Abort,
}

/// What a response body does before it asks the inner body for a frame.
pub(crate) enum Next {
    /// Ask the inner body.
    Poll,
    /// Hand out this chunk.
    Yield(&'static [u8]),
    /// The stream is over; nothing is held any more.
    End,
    /// Cut the stream with [`Aborted`](crate::Aborted); nothing is held any more.
    Abort,
}

impl TrackedState {
    /// `kind`: what the response is (an event stream or another stream), which decides the
    /// default on drain and whether a final event fits; not the kind a layer reports it as.
    /// `sized`: the body's length is known (and announced, as `Content-Length` on HTTP/1). Such
    /// a body is never finished early nor given a final event: either would break the length
    /// the client was told. It still aborts at the long-lived deadline. `encoded`: the body has
    /// a content coding (gzip): no plain-text final event can be appended to it.
    pub(crate) fn new(
        core: &'static Core,
        registration: Registration,
        kind: LongLivedKind,
        tracking: &Tracking,
        sized: bool,
        encoded: bool,
    ) -> Box<Self> {
        let on_drain = match tracking.on_drain {
            _ if sized => OnDrain::KeepUntilDeadline,
            Some(on_drain) => on_drain,
            None if kind == LongLivedKind::Sse => OnDrain::Finish,
            None => OnDrain::KeepUntilDeadline,
        };
        Box::new(TrackedState {
            core,
            registration: Some(registration),
            on_drain,
            // A final event is an SSE frame; other streams just end.
            final_event: tracking
                .final_event
                .filter(|_| kind == LongLivedKind::Sse && !sized && !encoded),
            wait: None,
            state: State::Streaming,
        })
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    /// Called only between frames: the only points at which a drain may end the body.
    fn step(&self, guard: &Option<InFlightGuard>) -> Step {
        if self.core.long_lived.is_expired()
            || guard.as_ref().is_some_and(InFlightGuard::is_aborted)
        {
            Step::Abort
        } else if self.on_drain == OnDrain::Finish && self.core.phase().admission_closed() {
            Step::Finish
        } else {
            Step::Continue
        }
    }

    /// Decides what the body does next: finish with the final event when the drain begins,
    /// abort at the long-lived deadline, or go on. Returns a small decision rather than a
    /// frame, so that frames only ever pass through the caller's inlined code.
    #[cold]
    #[inline(never)]
    pub(crate) fn next(&mut self, guard: &mut Option<InFlightGuard>) -> Next {
        match self.state {
            State::Done => return Next::End,
            State::Finishing => {
                // Released only now, after the final event was taken: the drain must not
                // complete (and the server exit) before the stream's end is written.
                self.end(guard);
                return Next::End;
            }
            State::Streaming => {}
        }
        match self.step(guard) {
            Step::Continue => Next::Poll,
            Step::Finish => match self.final_event.take() {
                Some(event) => {
                    self.state = State::Finishing;
                    Next::Yield(event.as_bytes())
                }
                None => {
                    self.end(guard);
                    Next::End
                }
            },
            Step::Abort => {
                self.end(guard);
                Next::Abort
            }
        }
    }

    /// Ends the stream: the inner body ended or failed, or the drain ended it. Nothing is held
    /// afterwards.
    #[cold]
    #[inline(never)]
    pub(crate) fn end(&mut self, guard: &mut Option<InFlightGuard>) {
        self.state = State::Done;
        self.wait = None;
        // The registration first: once the count reaches zero the report may be taken.
        self.registration = None;
        *guard = None;
    }

    /// Called when the inner body is pending: polls the wake-up for the next thing this body
    /// must react to. `Ready` means that thing has happened; the caller decides again.
    #[cold]
    #[inline(never)]
    pub(crate) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Decided by the setting alone, not by the phase: a body that read "serving" in
        // `step` and then waits here must still be woken by the drain's start, which may have
        // happened in between. Once `closing` has fired this is ready at once, and `step`
        // then answers `Finish`, so the caller's loop ends.
        let target = if self.on_drain == OnDrain::Finish {
            Target::Closing
        } else {
            Target::Expired
        };
        if !matches!(&self.wait, Some((current, _)) if *current == target) {
            let wait: Wait = match target {
                Target::Closing => Box::pin(Shutdown { core: self.core }.closing()),
                Target::Expired => Box::pin(self.core.long_lived.expired().cancelled()),
            };
            self.wait = Some((target, wait));
        }
        let (_, wait) = self.wait.as_mut().expect("set above");
        wait.as_mut().poll(cx)
    }
}
