//! The README's server code is excerpted from the examples, which CI compiles: every line
//! of those excerpts must still be found in its example, so the README cannot drift from
//! code that builds. Lines are compared without whitespace and without `//` comments, so
//! an excerpt may wrap lines differently and comment them in its own words. The two
//! fragments no example holds as written (a long-poll route, a WebSocket's guard) are
//! compiled in this file instead, and checked against it the same way.

use std::path::Path;

/// Each README heading whose first Rust block is an excerpt, and the source it comes from.
const EXCERPTS: [(&str, &str); 5] = [
    ("### axum", "examples/axum.rs"),
    ("### tonic", "examples/tonic.rs"),
    ("### Plain hyper", "examples/hyper.rs"),
    ("## Long-lived responses", "tests/readme_excerpts.rs"),
    (
        "### WebSockets and other upgrades",
        "tests/readme_excerpts.rs",
    ),
];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `line` without its `//` comment and without any whitespace.
fn code_of(line: &str) -> String {
    let code = match line.find("//") {
        // A `//` inside a string literal (an even number of quotes before it) is code.
        Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
        _ => line,
    };
    code.split_whitespace().collect()
}

/// The first `rust` code block after `heading`.
fn block_after<'a>(readme: &'a str, heading: &str) -> &'a str {
    let from = readme
        .lines()
        .position(|line| line.starts_with(heading))
        .unwrap_or_else(|| panic!("no heading {heading:?} in the README"));
    let mut lines = readme.lines().skip(from);
    lines
        .by_ref()
        .find(|line| line.starts_with("```rust"))
        .unwrap_or_else(|| panic!("no Rust block after {heading:?}"));
    let first = lines.next().expect("a block with a line");
    let start = first.as_ptr() as usize - readme.as_ptr() as usize;
    let end = readme[start..].find("\n```").expect("a closed block");
    &readme[start..start + end]
}

#[test]
fn excerpts_match_the_code_they_come_from() {
    let readme = read("README.md");
    let mut drifted = Vec::new();
    for (heading, example) in EXCERPTS {
        let source: String = read(example).lines().map(code_of).collect();
        for line in block_after(&readme, heading).lines() {
            let code = code_of(line);
            if !code.is_empty() && !source.contains(&code) {
                drifted.push(format!("{example}: {}", line.trim()));
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "README lines not found in the code they come from:\n{}",
        drifted.join("\n")
    );
}

/// The README's fragments, as it shows them, around what they leave out.
mod fragments {
    use std::convert::Infallible;

    use axum::extract::ws::WebSocketUpgrade;
    use axum::extract::State;
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::sse::{Event, Sse};
    use axum::response::{IntoResponse, Response};
    use axum::{routing::get, Extension, Router};
    use futures_util::Stream;
    use tower_drain::LongLivedKind;
    use tower_drain::{DrainSignal, LongLivedLayer, Shutdown};

    async fn poll(Extension(signal): Extension<DrainSignal>) -> &'static str {
        tokio::select! {
            _ = signal => "draining\n",
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => "timeout\n",
        }
    }

    async fn sse_handler() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
        Sse::new(futures_util::stream::pending())
    }

    pub(super) fn long_lived_app() -> Router {
        let shutdown = Shutdown::new();
        shutdown.set_long_lived_grace(std::time::Duration::from_secs(5));
        let app: Router = Router::new()
            .route("/events", get(sse_handler))
            .route("/poll", get(poll).layer(LongLivedLayer::route(shutdown)))
            .layer(shutdown.layer());
        app
    }

    async fn upgrade(State(shutdown): State<Shutdown>, ws: WebSocketUpgrade, uri: Uri) -> Response {
        let Some(guard) =
            shutdown.long_lived_guard(LongLivedKind::Upgrade, Method::GET, uri.path())
        else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        ws.on_upgrade(move |socket| async move {
            drop(socket);
            drop(guard);
        })
    }

    pub(super) fn websocket_app() -> Router {
        Router::new()
            .route("/ws", get(upgrade))
            .with_state(Shutdown::new())
    }
}

#[test]
fn readme_fragments_build_their_routers() {
    // axum checks a router's routes as they are added: a fragment that compiles but could
    // not be served would panic here.
    let _ = fragments::long_lived_app();
    let _ = fragments::websocket_app();
}
