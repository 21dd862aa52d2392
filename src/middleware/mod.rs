//! The middleware: admission, rejection and whole-response counting.
//!
//! One engine serves every layer, which differ only in the policy they hand it:
//!
//! | layer | counts | rejects | tracks long-lived |
//! |---|---|---|---|
//! | [`ShutdownLayer`] (from [`Shutdown::layer`](crate::Shutdown::layer)) | yes | yes | SSE |
//! | [`InFlightLayer`] | yes | no | no |
//! | [`RejectWhenDrainingLayer`] | no | yes | no |
//! | [`LongLivedLayer`](crate::LongLivedLayer) | no | no | SSE, or a whole route |
//!
//! Data flows one way: [`layer`] builds the [`service`], which admits the request (taking an
//! [`InFlightGuard`](crate::InFlightGuard)) or answers it with a rejection; the [`future`]
//! carries the guard until the response exists, and the [`body`] carries it until the last
//! frame is sent or the body is dropped. A response found long-lived gets a tracked body
//! whose drain behaviour lives in [`long_lived`](crate::long_lived).

pub mod body;
pub mod future;
pub mod layer;
mod policy;
pub(crate) mod rejection;
pub mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::{InFlightLayer, RejectWhenDrainingLayer, ShutdownLayer};
pub(crate) use policy::Policy;
pub use service::DrainService;

/// The error type of the wrapped response bodies: the inner body's error, boxed, or
/// [`Aborted`](crate::Aborted).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
