//! The layer stacks around the app: the crate's layer alone, or with another layer that can
//! end a request (a panic catcher, a timeout, a load shedder) outside it or inside it.

use std::time::Duration;

use http::StatusCode;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::App;
use crate::servers::{endpoint, Endpoint};
use crate::support::gate::Gate;

/// The timeout of the timeout layers: the `pending` route never answers, so it always
/// fires; how long it is does not matter.
const TIMEOUT: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// `shutdown.layer()` alone.
    Plain,
    /// tower-http's `CatchPanicLayer` outside the crate's layer.
    CatchPanicOutside,
    /// tower-http's `CatchPanicLayer` between the crate's layer and the app.
    CatchPanicInside,
    /// tower's `TimeoutLayer` (an error at the timeout) outside the crate's layer.
    TowerTimeoutOutside,
    TowerTimeoutInside,
    /// tower-http's `TimeoutLayer` (a `408` at the timeout) outside the crate's layer.
    HttpTimeoutOutside,
    HttpTimeoutInside,
    /// tower's `LoadShedLayer` over a `ConcurrencyLimitLayer` of one, outside the crate's
    /// layer.
    ShedOutside,
    ShedInside,
}

impl Stack {
    pub fn build(self, app: App) -> Endpoint {
        let layer = app.shutdown.layer();
        let shed = || {
            ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(1)
                .into_inner()
        };
        let tower_timeout = || tower::timeout::TimeoutLayer::new(TIMEOUT);
        let http_timeout = || {
            tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                TIMEOUT,
            )
        };
        match self {
            Stack::Plain => endpoint(layer.layer(app)),
            Stack::CatchPanicOutside => endpoint(CatchPanicLayer::new().layer(layer.layer(app))),
            Stack::CatchPanicInside => endpoint(layer.layer(CatchPanicLayer::new().layer(app))),
            Stack::TowerTimeoutOutside => endpoint(tower_timeout().layer(layer.layer(app))),
            Stack::TowerTimeoutInside => endpoint(layer.layer(tower_timeout().layer(app))),
            Stack::HttpTimeoutOutside => endpoint(http_timeout().layer(layer.layer(app))),
            Stack::HttpTimeoutInside => endpoint(layer.layer(http_timeout().layer(app))),
            Stack::ShedOutside => endpoint(shed().layer(layer.layer(app))),
            Stack::ShedInside => endpoint(layer.layer(shed().layer(app))),
        }
    }
}

/// The crate's layer behind a door: each request waits at `door` before the layer sees it,
/// so a test can let it in once admission has closed.
pub fn behind_door(app: App, door: Gate) -> Endpoint {
    let inner = app.shutdown.layer().layer(app);
    endpoint(service_fn(move |request| {
        let inner = inner.clone();
        let door = door.clone();
        async move {
            door.pass().await;
            inner.oneshot(request).await
        }
    }))
}
