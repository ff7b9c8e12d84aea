//! The tower layer (issue 18, item 5): contexts from the whole request
//! head, header names chosen at run time, and outcomes recorded against
//! the snapshot that served the request.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use flagstone::integrations::tower::{Flags, FlagsLayer};
use flagstone::{ContextBuf, FlagStore, Outcome};
use http::{HeaderName, Request};
use tower_layer::Layer;
use tower_service::Service;

/// The innermost service: hands back the `Flags` the layer put in.
#[derive(Clone)]
struct Handler;

impl Service<Request<()>> for Handler {
    type Response = Option<Flags>;
    type Error = Infallible;
    type Future = Ready<Result<Option<Flags>, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        ready(Ok(request.extensions().get::<Flags>().cloned()))
    }
}

fn serve(layer: &FlagsLayer, request: Request<()>) -> Flags {
    let mut service = layer.layer(Handler);
    match service.call(request).into_inner() {
        Ok(flags) => flags.expect("the layer put Flags in the extensions"),
        Err(never) => match never {},
    }
}

const DOC: &str = r#"{ "version": 1,
  "cohorts": { "staff": { "tenants": ["acme"] } },
  "flags": { "checkout": { "enabled": true, "bucket_by": "tenant",
    "stages": [ { "name": "internal", "cohorts": ["staff"] }, { "name": "everyone" } ],
    "stage": "internal" } } }"#;

/// What an authentication middleware left for later layers.
#[derive(Clone)]
struct Claims {
    org: String,
}

#[test]
fn the_context_comes_from_the_uri_and_extensions_set_by_earlier_middleware() {
    let store = Arc::new(FlagStore::from_json(DOC).expect("valid"));
    let layer = FlagsLayer::new(store).context_with(|parts| {
        let mut ctx = ContextBuf::new();
        if let Some(claims) = parts.extensions.get::<Claims>() {
            ctx = ctx.tenant(claims.org.as_str());
        }
        if let Some(rest) = parts.uri.path().strip_prefix("/region/") {
            ctx = ctx.region(rest.split('/').next().unwrap_or_default());
        }
        ctx
    });
    let mut request = Request::get("/region/eu-west/checkout").body(()).expect("request");
    request.extensions_mut().insert(Claims { org: "acme".into() });
    let flags = serve(&layer, request);
    assert_eq!(flags.context().get_tenant(), Some("acme"));
    assert_eq!(flags.context().get_region(), Some("eu-west"));
    assert!(flags.is_enabled("checkout"), "acme is staff");

    let stranger = serve(&layer, Request::get("/checkout").body(()).expect("request"));
    assert_eq!(stranger.context().get_tenant(), None);
    assert!(!stranger.is_enabled("checkout"));
}

#[test]
fn header_names_can_come_from_runtime_configuration() {
    let store = Arc::new(FlagStore::from_json(DOC).expect("valid"));
    let configured: Vec<String> = vec!["X-Org".into(), "x-zone".into(), "x-principal".into()];
    let names: Vec<HeaderName> = configured
        .iter()
        .map(|name| HeaderName::try_from(name.as_str()).expect("a header name"))
        .collect();
    let layer = FlagsLayer::new(store)
        .tenant_header(names[0].clone())
        .region_header(names[1].clone())
        .user_header(names[2].clone());
    let request = Request::get("/")
        .header("x-org", "acme")
        .header("x-zone", "eu-west")
        .header("x-principal", "u-7")
        .header("x-tenant-id", "someone-else")
        .body(())
        .expect("request");
    let flags = serve(&layer, request);
    let ctx = flags.context();
    assert_eq!(
        (ctx.get_tenant(), ctx.get_region(), ctx.get_user()),
        (Some("acme"), Some("eu-west"), Some("u-7"))
    );
    assert!(flags.is_enabled("checkout"));
}

#[test]
fn an_outcome_counts_under_the_stage_that_served_the_request() {
    let store = Arc::new(FlagStore::from_json(DOC).expect("valid"));
    let layer = FlagsLayer::new(store.clone());
    let request = Request::get("/").header("x-tenant-id", "acme").body(()).expect("request");
    let flags = serve(&layer, request);
    assert!(flags.is_enabled("checkout"), "served the new checkout by stage internal");

    // A kill switch lands while the request runs.
    let killed = DOC
        .replace(r#""version": 1"#, r#""version": 2"#)
        .replace(r#""enabled": true"#, r#""enabled": false"#);
    store.apply_json(killed).expect("applied");
    flags.record("checkout", Outcome::Error);

    let metrics = store.metrics();
    assert_eq!(metrics.outcomes_of("checkout", "internal").map(|o| o.errors), Some(1));
    let text = metrics.to_prometheus();
    assert!(
        !text
            .lines()
            .any(|l| l.contains(r#"outcome="error""#) && !l.contains(r#"stage="internal""#)),
        "the error counted under another stage:\n{text}"
    );
}

#[test]
fn a_context_buf_reads_back_what_was_set() {
    let ctx = ContextBuf::new().tenant("acme").user("u-1").attr("plan", "pro").attr("plan", "team");
    assert_eq!(ctx.get_tenant(), Some("acme"));
    assert_eq!(ctx.get_region(), None);
    assert_eq!(ctx.get_user(), Some("u-1"));
    assert_eq!(ctx.get_attr("plan"), Some("team"));
    assert_eq!(ctx.get_attr("missing"), None);
    assert_eq!(ctx.attrs().collect::<Vec<_>>(), vec![("plan", "team")]);
}
