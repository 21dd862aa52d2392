//! What a tracked (long-lived) response body does beyond counting: end server-sent events
//! between events when the drain begins, abort the rest at the long-lived deadline.

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
    /// Where the bytes sent so far leave the event stream, for a plain-text event stream:
    /// it is finished only between events. `None` for other bodies, finished between frames.
    events: Option<EventEdge>,
    /// A body of known length that had sent nothing before the long-lived deadline: a marked
    /// route's answer. Not aborted at that deadline, since an abort before its first byte
    /// leaves the client no response at all (hyper drops the head with the body), and one
    /// after it breaks the length the client was told: it is sent whole.
    unstarted_answer: bool,
}

/// Where the bytes sent so far leave an event stream, by their last line ends. An event ends
/// with an empty line; a line ends with CRLF, LF or CR, and a LF right after a CR is part of
/// the same line end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EventEdge {
    /// Inside a line.
    InLine,
    /// After the end of a line that was not empty (CR: a LF may follow and belongs to it).
    LineEnd { cr: bool },
    /// After an empty line, or at the start: between events.
    Between { cr: bool },
}

impl EventEdge {
    fn after(self, byte: u8) -> EventEdge {
        match (self, byte) {
            (EventEdge::LineEnd { cr: true }, b'\n') => EventEdge::LineEnd { cr: false },
            (EventEdge::Between { cr: true }, b'\n') => EventEdge::Between { cr: false },
            (EventEdge::InLine, b'\n' | b'\r') => EventEdge::LineEnd { cr: byte == b'\r' },
            (EventEdge::LineEnd { .. } | EventEdge::Between { .. }, b'\n' | b'\r') => {
                EventEdge::Between { cr: byte == b'\r' }
            }
            _ => EventEdge::InLine,
        }
    }

    /// The edge after `bytes` are sent. Only the line ends after the last other byte matter,
    /// so a frame costs a scan of its tail, not of all of it.
    fn after_bytes(self, bytes: &[u8]) -> EventEdge {
        let (start, tail) = match bytes.iter().rposition(|&b| b != b'\n' && b != b'\r') {
            Some(last) => (EventEdge::InLine, &bytes[last + 1..]),
            None => (self, bytes),
        };
        tail.iter().fold(start, |edge, &byte| edge.after(byte))
    }
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
    /// the client was told. It still aborts at the long-lived deadline if it has begun by
    /// then, and otherwise is sent whole (see `unstarted_answer`). `encoded`: the body has
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
            // Bytes of an encoded body say nothing about its events: it ends between frames.
            events: (kind == LongLivedKind::Sse && !sized && !encoded)
                .then_some(EventEdge::Between { cr: false }),
            unstarted_answer: sized,
        })
    }

    /// Notes a data frame the body passes on, for a body that ends only between events:
    /// `chunk` is the frame's first contiguous piece of `remaining` bytes. Its bytes, not the
    /// frame: a frame whose address is taken on the path every response shares goes through
    /// memory on every response. A frame in several pieces (a `Buf` other than `Bytes`) is
    /// taken to leave the stream between events, as a body that is not watched would.
    #[cold]
    #[inline(never)]
    pub(crate) fn sent(&mut self, chunk: &[u8], remaining: usize) {
        // Begun before the long-lived deadline, it is cut there; begun after, it has been let
        // through (see `step`) and goes on to its end: cut after its first frame, it would
        // break its length as surely as one cut mid-stream.
        if self.unstarted_answer && !self.core.long_lived.is_expired() {
            self.unstarted_answer = false;
        }
        let Some(edge) = self.events else { return };
        self.events = Some(if chunk.len() == remaining {
            edge.after_bytes(chunk)
        } else {
            EventEdge::Between { cr: false }
        });
    }

    /// True where the body may end: between events of an event stream, anywhere between
    /// frames for other bodies.
    fn between_events(&self) -> bool {
        !matches!(
            self.events,
            Some(EventEdge::InLine | EventEdge::LineEnd { .. })
        )
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    /// Called only between frames: the only points at which a drain may end the body.
    fn step(&self, guard: &Option<InFlightGuard>) -> Step {
        // An answer that only came at the long-lived deadline (the handler answered as it
        // passed) is sent whole rather than cut before its first byte or after it; the drain
        // deadline still bounds it.
        let cut = self.core.long_lived.is_expired() && !self.unstarted_answer;
        if cut || guard.as_ref().is_some_and(InFlightGuard::is_aborted) {
            Step::Abort
        } else if self.on_drain == OnDrain::Finish
            && self.core.phase().admission_closed()
            // Inside an event the body goes on to the event's end: a final event sent now
            // would be read as part of it, and an end now would drop it.
            && self.between_events()
        {
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
        // An answer let through past the long-lived deadline (see `step`) has nothing left
        // to wait for but its inner body, which has its waker.
        if self.unstarted_answer && self.core.long_lived.is_expired() {
            return Poll::Pending;
        }
        // Decided by the setting, not by the phase: a body that read "serving" in `step` and
        // then waits here must still be woken by the drain's start, which may have happened
        // in between. Once `closing` has fired this is ready at once, and `step` then answers
        // `Finish`, so the caller's loop ends. The one exception: a body inside an event once
        // the drain has begun, which `step` lets go on; it waits for the inner body (whose
        // next frame may end the event) and the deadline, or the loop would never rest.
        let inside_event_while_draining =
            !self.between_events() && self.core.phase().admission_closed();
        let target = if self.on_drain == OnDrain::Finish && !inside_event_while_draining {
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
