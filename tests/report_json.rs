//! The reports' JSON (feature `serde`): the field names a log pipeline or a dashboard reads,
//! for every outcome, hook status and kind of long-lived entry, and nothing but finite
//! numbers. A renamed or dropped field breaks those readers silently, so each shape is
//! spelled out here.
#![cfg(feature = "serde")]

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use tower::{Layer, ServiceExt};
use tower_drain::{LongLivedKind, Shutdown, ShutdownSequence};

use support::bounded_for;

/// An event stream's body that never sends anything: it stays in flight until dropped.
struct Silent;

impl Body for Silent {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The keys of `value`, an object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Fails on any number in `value` that is not finite, and on any `_ms` field that is not a
/// number: durations are milliseconds everywhere.
fn assert_numbers_sound(value: &Value, path: &str) {
    match value {
        Value::Object(map) => {
            for (key, field) in map {
                if key.ends_with("_ms") {
                    assert!(field.is_number(), "{path}.{key} is not a number: {field}");
                }
                assert_numbers_sound(field, &format!("{path}.{key}"));
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                assert_numbers_sound(item, &format!("{path}[{index}]"));
            }
        }
        Value::Number(number) => {
            let float = number.as_f64().unwrap();
            assert!(float.is_finite() && float >= 0.0, "{path} = {number}");
        }
        _ => {}
    }
}

const SHUTDOWN_REPORT: [&str; 8] = [
    "drain",
    "drain_ms",
    "forced_by",
    "hooks",
    "hooks_ms",
    "lame_duck_ms",
    "total_ms",
    "trigger",
];
const DRAIN_REPORT: [&str; 8] = [
    "completed",
    "elapsed_ms",
    "forced",
    "in_flight_at_start",
    "long_lived",
    "outcome",
    "rejected",
    "still_running",
];
const LONG_LIVED_ENTRY: [&str; 4] = ["age_ms", "kind", "method", "path"];
const HOOK_REPORT: [&str; 3] = ["elapsed_ms", "name", "outcome"];

/// A forced sequence with a long-lived entry of each origin (a guard named by method and
/// path, an event stream found by its content type) and a hook of each outcome.
#[tokio::test(start_paused = true)]
async fn a_forced_report_with_every_kind_of_entry_and_hook_keeps_its_field_names() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_secs(1));
    let service = shutdown
        .layer()
        .layer(tower::service_fn(|_: Request<()>| async {
            let response = Response::builder()
                .header("content-type", "text/event-stream")
                .body(Silent)
                .unwrap();
            Ok::<_, Infallible>(response)
        }));
    let events = service.oneshot(Request::new(())).await.unwrap();
    let socket = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(5))
        .hook("ok", Duration::from_secs(1), || async {
            Ok::<(), String>(())
        })
        .hook("fails", Duration::from_secs(1), || async {
            Err::<(), _>("disk full")
        })
        .hook("hangs", Duration::from_secs(1), || {
            std::future::pending::<Result<(), String>>()
        })
        .hook("panics", Duration::from_secs(1), || async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        })
        .budget(Duration::from_secs(60))
        .no_signals()
        .build()
        .unwrap();
    let trigger = sequence.trigger();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    // Past the long-lived deadline, then forced: both entries are cut, the drain forced.
    bounded_for(
        Duration::from_secs(2),
        "the long-lived deadline",
        socket.deadline(),
    )
    .await;
    trigger.fire();
    let report = bounded_for(Duration::from_secs(60), "the sequence", run)
        .await
        .unwrap();
    drop((events, socket));

    let json = serde_json::to_value(&report).unwrap();
    assert_numbers_sound(&json, "report");
    assert_eq!(keys(&json), SHUTDOWN_REPORT, "{json}");
    assert_eq!(json["trigger"], "manual trigger");
    assert_eq!(json["forced_by"], "manual trigger");
    let drain = &json["drain"];
    assert_eq!(keys(drain), DRAIN_REPORT, "{drain}");
    assert_eq!(drain["outcome"], "timed_out");
    assert_eq!(drain["forced"], true);
    assert_eq!(drain["still_running"], 2);

    let entries = drain["long_lived"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{drain}");
    for entry in entries {
        assert_eq!(keys(entry), LONG_LIVED_ENTRY, "{entry}");
    }
    let named = entries.iter().find(|entry| entry["kind"] == "upgrade");
    let named = named.unwrap_or_else(|| panic!("no upgrade entry: {drain}"));
    assert_eq!(named["method"], "GET");
    assert_eq!(named["path"], "/ws");
    let found = entries.iter().find(|entry| entry["kind"] == "sse");
    let found = found.unwrap_or_else(|| panic!("no sse entry: {drain}"));
    assert_eq!(found["method"], Value::Null, "present, and null: {found}");
    assert_eq!(found["path"], Value::Null, "present, and null: {found}");

    let hooks = json["hooks"].as_array().unwrap();
    let outcomes: Vec<(&str, Vec<&str>, &Value)> = hooks
        .iter()
        .map(|hook| {
            assert_eq!(keys(hook), HOOK_REPORT, "{hook}");
            let outcome = &hook["outcome"];
            (
                hook["name"].as_str().unwrap(),
                keys(outcome),
                &outcome["status"],
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("ok", vec!["status"], &Value::from("ok")),
            ("fails", vec!["detail", "status"], &Value::from("failed")),
            (
                "hangs",
                vec!["status", "timeout_ms"],
                &Value::from("timed_out")
            ),
            ("panics", vec!["detail", "status"], &Value::from("panicked")),
        ]
    );
    assert_eq!(hooks[2]["outcome"]["timeout_ms"], 1000.0);
}

/// A drain that drained: the same fields, `forced_by` present and null, and no entry.
#[tokio::test(start_paused = true)]
async fn a_drained_report_keeps_the_same_field_names() {
    let shutdown = Shutdown::new();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_secs(1))
        .drain_timeout(Duration::from_secs(5))
        .no_signals()
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded_for(Duration::from_secs(60), "the sequence", sequence.run()).await;
    let json = serde_json::to_value(&report).unwrap();
    assert_numbers_sound(&json, "report");
    assert_eq!(keys(&json), SHUTDOWN_REPORT, "{json}");
    assert_eq!(json["forced_by"], Value::Null);
    assert_eq!(json["lame_duck_ms"], 1000.0);
    assert_eq!(keys(&json["drain"]), DRAIN_REPORT);
    assert_eq!(json["drain"]["outcome"], "drained");
    assert_eq!(json["drain"]["long_lived"], Value::Array(Vec::new()));
    assert_eq!(json["hooks"], Value::Array(Vec::new()));
}
