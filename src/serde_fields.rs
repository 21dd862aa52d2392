//! How report fields that serde cannot serialise by itself are written (feature `serde`).

use std::time::Duration;

use http::Method;
use serde::Serializer;

/// Durations as milliseconds (a float, microsecond precision), the unit people read shutdown
/// timings in, rather than serde's `{secs, nanos}`.
pub(crate) fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_micros() as f64 / 1000.0)
}

/// An HTTP method as its name (`"GET"`), or `null`.
pub(crate) fn method<S: Serializer>(
    method: &Option<Method>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match method {
        Some(method) => serializer.serialize_some(method.as_str()),
        None => serializer.serialize_none(),
    }
}
