//! What a tracked (long-lived) response body does beyond counting: end server-sent events
//! between events when the drain begins, abort the rest at the long-lived deadline.

use std::task::{ready, Context, Poll};

use super::{LongLivedKind, OnDrain, Registration, Tracking, Wait};
use crate::core::Core;
use crate::guard::InFlightGuard;
use crate::middleware::rejection::GrpcEnd;
use crate::{Phase, Shutdown};

/// The state of one tracked body. Boxed inside the response body, so short responses do not
/// carry its size.
pub(crate) struct TrackedState {
    core: &'static Core,
    /// Dropped when the body ends, errors or is dropped: the entry leaves the registry.
    registration: Option<Registration>,
    on_drain: OnDrain,
    final_event: Option<&'static str>,
    /// Set for a gRPC response, which is never read as events nor given a final event.
    /// Finished on drain, a gRPC-web one ends with the status UNAVAILABLE in its trailer
    /// frame (cleared once the response has sent its own); a gRPC one ends without a status
    /// (see `next`).
    grpc_end: Option<GrpcEnd>,
    /// Set when such a gRPC response, asked to finish, found its inner body waiting. Until
    /// then it passes on what its handler has ready: a rule cannot tell a unary answer from
    /// a stream (both are `application/grpc`), and ending an answer that is ready whole,
    /// or a stream's last messages and status, would fail a call its handler completed.
    grpc_waiting_seen: bool,
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
    /// The bytes a body of known length has still to send: at zero it has been sent whole,
    /// whether or not the server polls it again (hyper's HTTP/1 stops at the announced
    /// length; its HTTP/2 asks on for the end and any trailers, which are then let through).
    length_left: Option<u64>,
    /// A bypassed gRPC stream (a health `Watch`): it ignores the drain's start and the
    /// deadlines, and ends once the drain is over, when it has nothing more to send.
    until_drain_over: bool,
    /// Set when such a stream, with the drain over, found its inner body pending: everything
    /// it had to say (its NOT_SERVING) has been passed on, and it ends at its next step.
    drain_over_seen: bool,
    /// The server has asked the body for a frame at least once.
    polled: bool,
}

/// Where the bytes sent so far leave an event stream. An event is the lines before an empty
/// line; a line ends with CRLF, LF or CR, and a LF right after a CR is part of the same line
/// end. A comment (a line beginning with `:`, such as a keep-alive or the padding some
/// clients ask for) belongs to no event: clients skip it, so after one the stream is still
/// between events if it was before.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EventEdge {
    /// Nothing sent yet, or an empty frame: a byte order mark may still come, which clients
    /// drop.
    Start,
    /// Inside a line. `pending`: the event under way has a line other than a comment, this
    /// one included.
    InLine { pending: bool },
    /// After a line end (CR: a LF may follow and belongs to it). `pending` as above; without
    /// it, between events.
    LineEnd { cr: bool, pending: bool },
}

/// What a stream may begin with and clients drop: the UTF-8 byte order mark.
const BYTE_ORDER_MARK: &[u8] = "\u{FEFF}".as_bytes();

fn is_line_end(byte: u8) -> bool {
    byte == b'\n' || byte == b'\r'
}

impl EventEdge {
    /// At the start of a line, with no event under way.
    const BETWEEN: EventEdge = EventEdge::LineEnd {
        cr: false,
        pending: false,
    };

    fn pending(self) -> bool {
        match self {
            EventEdge::Start => false,
            EventEdge::InLine { pending } | EventEdge::LineEnd { pending, .. } => pending,
        }
    }

    fn after(self, byte: u8) -> EventEdge {
        let edge = if self == EventEdge::Start {
            EventEdge::BETWEEN
        } else {
            self
        };
        match (edge, byte) {
            (EventEdge::LineEnd { cr: true, pending }, b'\n') => {
                EventEdge::LineEnd { cr: false, pending }
            }
            // An empty line: the event ends.
            (EventEdge::LineEnd { .. }, b'\n' | b'\r') => EventEdge::LineEnd {
                cr: byte == b'\r',
                pending: false,
            },
            (EventEdge::InLine { pending }, b'\n' | b'\r') => EventEdge::LineEnd {
                cr: byte == b'\r',
                pending,
            },
            (EventEdge::LineEnd { pending, .. }, _) => EventEdge::InLine {
                pending: pending || byte != b':',
            },
            (edge, _) => edge,
        }
    }

    fn after_each(self, bytes: &[u8]) -> EventEdge {
        bytes.iter().fold(self, |edge, &byte| edge.after(byte))
    }

    /// The edge after `bytes` are sent. What matters is the line ends after the last other
    /// byte and, unless they hold an empty line, the lines of the event under way: a frame
    /// costs a scan of its last line and tail, and of more only after a comment.
    fn after_bytes(self, bytes: &[u8]) -> EventEdge {
        let (edge, bytes) = match self {
            EventEdge::Start if bytes.is_empty() => return EventEdge::Start,
            EventEdge::Start => (
                EventEdge::BETWEEN,
                bytes.strip_prefix(BYTE_ORDER_MARK).unwrap_or(bytes),
            ),
            edge => (edge, bytes),
        };
        let Some(last) = bytes.iter().rposition(|&byte| !is_line_end(byte)) else {
            return edge.after_each(bytes);
        };
        let tail = &bytes[last + 1..];
        // An empty line in the tail ends the event, whatever its lines were.
        let ended = EventEdge::InLine { pending: true }.after_each(tail);
        if !ended.pending() {
            return ended;
        }
        let pending = edge.pending_through(&bytes[..=last]);
        EventEdge::InLine { pending }.after_each(tail)
    }

    /// Whether the event under way after `bytes`, which end inside a line, has a line other
    /// than a comment; `self` is the edge before `bytes`. Reads back line by line, and only
    /// past comments.
    fn pending_through(self, bytes: &[u8]) -> bool {
        let mut end = bytes.len();
        // Bounded: each pass moves `end` back past one line, and `bytes` is not empty.
        loop {
            let line = bytes[..end]
                .iter()
                .rposition(|&byte| is_line_end(byte))
                .map_or(0, |index| index + 1);
            if line == 0 {
                // The line began in an earlier frame, or begins these bytes.
                return match self {
                    EventEdge::InLine { pending } => pending,
                    EventEdge::Start | EventEdge::LineEnd { .. } => {
                        self.pending() || bytes[0] != b':'
                    }
                };
            }
            if bytes[line] != b':' {
                return true;
            }
            // A comment: the event is under way only if it was before this line.
            let ends = bytes[..line]
                .iter()
                .rposition(|&byte| !is_line_end(byte))
                .map_or(0, |index| index + 1);
            if ends == 0 {
                return self.after_each(&bytes[..line]).pending();
            }
            let run = EventEdge::InLine { pending: true }.after_each(&bytes[ends..line]);
            if !run.pending() {
                return false;
            }
            end = ends;
        }
    }
}

impl Drop for TrackedState {
    fn drop(&mut self) {
        // Before the registration goes: see `Registration::dropped_unpolled`.
        if !self.polled {
            if let Some(registration) = self.registration.as_mut() {
                registration.dropped_unpolled();
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Closing,
    Expired,
    /// The drain's outcome is decided (a bypassed stream's only wake-up).
    DrainOver,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    /// The final event has been handed out; the next poll ends the stream.
    Finishing,
    Done,
}

/// Resolves once the drain's outcome is decided (`Drained` or `TimedOut`), at once if it is.
fn drain_over(core: &'static Core) -> Wait {
    Box::pin(async move {
        let decided = core.decided_notify().notified();
        let mut decided = std::pin::pin!(decided);
        // Registered before the phase is read: `decide` stores the phase before it notifies,
        // and both the registration and the notification take the `Notify`'s lock, so either
        // this read sees the outcome or the notification finds this waiter.
        decided.as_mut().enable();
        if core.phase() < Phase::Drained {
            decided.await;
        }
    })
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
    /// `kind`: what the response is (an event stream or another stream), or what a user rule
    /// calls it, which decides the default on drain; not the kind a layer reports it as.
    /// `plain_events`: the response is `text/event-stream` with no content coding (gzip).
    /// Only then are its bytes read as events and a final event appended: a rule may call
    /// any stream `Sse`, to have it finished on drain, and a stream that is not one has no
    /// event boundary to wait for; nor can a plain-text event be appended to a coded one.
    /// `length`: the body's length, if known (and announced, as `Content-Length` on HTTP/1).
    /// Such a body is never finished early nor given a final event: either would break the
    /// length the client was told. It still aborts at the long-lived deadline if it has begun
    /// by then, and otherwise is sent whole (see `unstarted_answer`). `grpc_end`:
    /// the response is gRPC (or gRPC-web), whatever `kind` says: it gets no final event, is
    /// finished between frames (tonic's frames hold whole messages) once it has nothing
    /// ready, and ends with a status.
    pub(crate) fn new(
        core: &'static Core,
        mut registration: Registration,
        kind: LongLivedKind,
        plain_events: bool,
        tracking: &Tracking,
        length: Option<u64>,
        grpc_end: Option<GrpcEnd>,
    ) -> Box<Self> {
        let sized = length.is_some();
        // An empty answer is whole before the server looks at it: it never polls the body.
        if length == Some(0) {
            registration.sent_whole();
        }
        // Read as an event stream only if it is one, and not gRPC (a rule may name any stream
        // `Sse`, gRPC ones included).
        let events = plain_events && !sized && grpc_end.is_none();
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
            final_event: tracking.final_event.filter(|_| events),
            grpc_end,
            grpc_waiting_seen: false,
            wait: None,
            state: State::Streaming,
            // Bytes of an encoded body say nothing about its events: it ends between frames.
            events: events.then_some(EventEdge::Start),
            unstarted_answer: sized,
            length_left: length,
            until_drain_over: false,
            drain_over_seen: false,
            polled: false,
        })
    }

    /// The state of a gRPC stream on a bypassed path, neither counted nor registered: it runs
    /// through the lame duck and the drain (health keeps answering while the server is
    /// leaving), and once the drain is over, Drained or cut short, it passes on what it has
    /// ready and ends as `end` says, so that its connection, and the server, can close. Its
    /// client reads the end as a failed call (UNKNOWN for gRPC, UNAVAILABLE for gRPC-web),
    /// which client-side health checking takes as "unhealthy: go elsewhere".
    #[cold]
    pub(crate) fn until_drain_over(core: &'static Core, end: GrpcEnd) -> Box<Self> {
        Box::new(TrackedState {
            core,
            registration: None,
            on_drain: OnDrain::Finish,
            final_event: None,
            grpc_end: Some(end),
            grpc_waiting_seen: false,
            wait: None,
            state: State::Streaming,
            events: None,
            unstarted_answer: false,
            length_left: None,
            until_drain_over: true,
            drain_over_seen: false,
            polled: false,
        })
    }

    /// Notes a data frame the body passes on, for a body that ends only between events, a
    /// gRPC-web one, whose status may be the frame, or one of known length, which the frame
    /// may complete: `chunk` is the frame's first contiguous piece of `remaining` bytes. Its
    /// bytes, not the frame: a frame whose address is taken on the path every response shares
    /// goes through memory on every response. A frame in several pieces (a `Buf` other than
    /// `Bytes`) is taken to leave the stream between events, as a body that is not watched
    /// would.
    #[cold]
    #[inline(never)]
    pub(crate) fn sent(&mut self, chunk: &[u8], remaining: usize) {
        // Begun before the long-lived deadline, it is cut there; begun after, it has been let
        // through (see `step`) and goes on to its end: cut after its first frame, it would
        // break its length as surely as one cut mid-stream. An empty frame begins nothing:
        // the client has no byte of the answer yet.
        if self.unstarted_answer && remaining > 0 && !self.core.long_lived.is_expired() {
            self.unstarted_answer = false;
        }
        if let Some(left) = self.length_left.as_mut() {
            *left = left.saturating_sub(remaining as u64);
            if *left == 0 {
                if let Some(registration) = self.registration.as_mut() {
                    registration.sent_whole();
                }
            }
        }
        // gRPC-web's status is a frame of the body: once it is out, an end on drain adds none.
        if self.grpc_end.is_some_and(|end| end.is_status(chunk)) {
            self.grpc_end = None;
        }
        let Some(edge) = self.events else { return };
        self.events = Some(if chunk.len() == remaining {
            edge.after_bytes(chunk)
        } else {
            EventEdge::BETWEEN
        });
    }

    /// True where the body may end: between events of an event stream, anywhere between
    /// frames for other bodies.
    fn between_events(&self) -> bool {
        self.events.is_none_or(|edge| {
            matches!(
                edge,
                EventEdge::Start | EventEdge::LineEnd { pending: false, .. }
            )
        })
    }

    /// True for an answer of known length the long-lived deadline does not cut: one that had
    /// not begun by then (see `unstarted_answer`), or one whose every announced byte is out.
    /// The client has the latter whole; over HTTP/2 the server still asks the body for its end
    /// (and any trailers), and a reset there would make a whole answer, which the report does
    /// not list as cut, look failed.
    fn let_through(&self) -> bool {
        self.unstarted_answer || self.length_left == Some(0)
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    /// Called only between frames: the only points at which a drain may end the body.
    fn step(&self) -> Step {
        // A bypassed stream is neither waited for nor cut: it ends once the drain is over.
        if self.until_drain_over {
            return if self.drain_over_seen {
                Step::Finish
            } else {
                Step::Continue
            };
        }
        // The drain deadline cuts everything still running.
        if self.core.is_aborted() {
            return Step::Abort;
        }
        // Asked to finish, a body that can end cleanly now does, even once the long-lived
        // deadline has passed: the deadline cuts what has not finished, and this one finishes
        // at this very poll, as soon as a cut would end it. So the order in which the drain's
        // start and that deadline reach it (the same instant with a zero grace) changes
        // nothing. Inside an event the body goes on to the event's end instead: a final event
        // sent now would be read as part of it, and an end now would drop it. A gRPC one
        // goes on while it has frames ready (see `grpc_waiting_seen`), until the long-lived
        // deadline, where it ends (with a zero grace, at once).
        if self.on_drain == OnDrain::Finish
            && self.core.phase().admission_closed()
            && self.between_events()
            && (self.grpc_end.is_none()
                || self.grpc_waiting_seen
                || self.core.long_lived.is_expired())
        {
            return Step::Finish;
        }
        // An answer that only came at the long-lived deadline (the handler answered as it
        // passed) is sent whole rather than cut before its first byte or after it, and one
        // whose every byte is out goes on to its end; the drain deadline still bounds both.
        if self.core.long_lived.is_expired() && !self.let_through() {
            Step::Abort
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
        self.polled = true;
        match self.state {
            State::Done => return Next::End,
            State::Finishing => {
                // Released only now, after the final event was taken: the drain must not
                // complete (and the server exit) before the stream's end is written.
                self.end_whole(guard);
                return Next::End;
            }
            State::Streaming => {}
        }
        match self.step() {
            Step::Continue => Next::Poll,
            // Released at the next poll, after the status was taken, like a final event.
            Step::Finish if self.grpc_end.is_some() => match self.grpc_end.and_then(GrpcEnd::frame)
            {
                Some(frame) => {
                    self.state = State::Finishing;
                    Next::Yield(frame)
                }
                // gRPC over HTTP/2 carries its status in a trailers frame, and building one in
                // the body's per-frame code cost every frame of every response about ten
                // instructions (`benches/report-notes.md`): it ends without one, which its
                // client reads as UNKNOWN. A handler that wants UNAVAILABLE ends the stream
                // itself on its `DrainSignal`.
                None => {
                    self.end_whole(guard);
                    Next::End
                }
            },
            Step::Finish => match self.final_event.take() {
                Some(event) => {
                    self.state = State::Finishing;
                    Next::Yield(event.as_bytes())
                }
                None => {
                    self.end_whole(guard);
                    Next::End
                }
            },
            Step::Abort => {
                self.end(guard);
                Next::Abort
            }
        }
    }

    /// Ends the stream whole: the inner body ended, or the drain finished it cleanly.
    #[cold]
    #[inline(never)]
    pub(crate) fn end_whole(&mut self, guard: &mut Option<InFlightGuard>) {
        if let Some(registration) = self.registration.as_mut() {
            registration.sent_whole();
        }
        self.end(guard);
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
        if self.until_drain_over {
            let (_, over) = self
                .wait
                .get_or_insert_with(|| (Target::DrainOver, drain_over(self.core)));
            ready!(over.as_mut().poll(cx));
            self.drain_over_seen = true;
            return Poll::Ready(());
        }
        // A gRPC response asked to finish has passed on all it had ready: it ends now.
        if self.grpc_end.is_some()
            && self.on_drain == OnDrain::Finish
            && self.core.phase().admission_closed()
        {
            // Unless its task has spent tokio's cooperative budget: every tokio resource
            // (a channel a handler streams from) then answers pending with its items ready.
            // The task yields and takes them at its next poll, with a fresh budget; one
            // always ready still ends at the long-lived deadline (see `step`).
            if !tokio::task::coop::has_budget_remaining() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.grpc_waiting_seen = true;
            return Poll::Ready(());
        }
        // An answer let through past the long-lived deadline (see `step`) has nothing left
        // to wait for but its inner body, which has its waker.
        if self.let_through() && self.core.long_lived.is_expired() {
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
                Target::DrainOver => drain_over(self.core),
            };
            self.wait = Some((target, wait));
        }
        let (_, wait) = self.wait.as_mut().expect("set above");
        wait.as_mut().poll(cx)
    }
}
