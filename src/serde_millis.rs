//! Durations in reports serialise as milliseconds (a float, microsecond precision), the unit
//! people read shutdown timings in, rather than serde's `{secs, nanos}`.

use std::time::Duration;

use serde::Serializer;

pub(crate) fn serialize<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_micros() as f64 / 1000.0)
}
