//! An axum service whose routes are gated by flags, with configs pushed
//! through a file while it runs.
//!
//! `FlagsLayer` gives every request a snapshot and its context (tenant,
//! region and user from headers); handlers ask `flags.is_enabled(..)`. An
//! `Updater` watches the config file, so a push is a file write.
//!
//! ```sh
//! cargo run --example axum_service --features tower -- --config flags.json --addr 127.0.0.1:3000
//! curl -H 'x-tenant-id: acme' localhost:3000/checkout
//! curl localhost:3000/metrics
//! ```
//!
//! Without `--config` it writes a demo config to a temporary directory.

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use flagstone::integrations::tower::{Flags, FlagsLayer};
use flagstone::{FlagStore, Outcome, Updater};

/// The demo config: the new checkout for staff only; search v2 dark.
pub const DEMO: &str = r#"{ "version": 1,
  "cohorts": { "staff": { "tenants": ["acme-internal"] } },
  "flags": {
    "new-checkout": { "enabled": true, "bucket_by": "tenant",
      "stages": [ { "name": "internal", "cohorts": ["staff"] }, { "name": "everyone" } ],
      "stage": "internal",
      "variants": [ { "name": "one-page", "weight": 1 } ] },
    "search-v2": { "enabled": false }
  } }"#;

/// The service's routes, with the flags layer.
pub fn app(store: Arc<FlagStore>) -> Router {
    Router::new()
        .route("/checkout", get(checkout))
        .route("/search", get(search))
        .route("/metrics", get(metrics))
        .layer(FlagsLayer::new(store.clone()))
        .with_state(store)
}

async fn checkout(Extension(flags): Extension<Flags>) -> String {
    let started = Instant::now();
    let body = match flags.evaluate("new-checkout") {
        ev if ev.enabled => format!("new checkout ({})", ev.variant.unwrap_or("default")),
        _ => "classic checkout".to_owned(),
    };
    flags.record("new-checkout", Outcome::Success);
    flags.record("new-checkout", Outcome::Latency(started.elapsed()));
    body
}

async fn search(Extension(flags): Extension<Flags>) -> (StatusCode, &'static str) {
    if flags.is_enabled("search-v2") {
        (StatusCode::OK, "search v2")
    } else {
        (StatusCode::NOT_FOUND, "no such page")
    }
}

async fn metrics(State(store): State<Arc<FlagStore>>) -> ([(HeaderName, &'static str); 1], String) {
    ([(CONTENT_TYPE, flagstone::PROMETHEUS_CONTENT_TYPE)], store.metrics().to_prometheus())
}

/// Starts the service on `addr` with the config at `config`, watched for
/// pushes every `interval`; returns the address it listens on.
pub async fn serve(
    config: &Path,
    addr: SocketAddr,
    interval: Duration,
) -> Result<(SocketAddr, Updater), Box<dyn Error>> {
    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store.clone())
        .file(config)
        .interval(interval)
        .wait_for_first(Duration::from_secs(2))
        .on_event(|event| eprintln!("flags: {event}"))
        .start()?;
    // Waits up to wait_for_first for the first config without blocking a
    // runtime worker (start() itself returns at once).
    updater.ready().await;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app(store)).await {
            eprintln!("server stopped: {e}");
        }
    });
    Ok((local, updater))
}

#[allow(dead_code)] // the integration test uses `serve`, not `main`
#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut addr) = (None, "127.0.0.1:3000".to_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--addr" => addr = args.next().ok_or("--addr needs a value")?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let config = match config {
        Some(path) => path,
        None => {
            let dir = std::env::temp_dir().join(format!("flagstone-axum-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("flags.json");
            std::fs::write(&path, DEMO)?;
            path
        }
    };
    let (local, _updater) = serve(&config, addr.parse()?, Duration::from_secs(1)).await?;
    println!("listening on http://{local} (config: {})", config.display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
