//! A tower layer that gives each request its flags (feature `tower`).
//!
//! [`FlagsLayer`] builds the request's context once, from its headers (or
//! with a function you give, which sees the whole request head: URI,
//! headers, and the extensions that earlier middleware set), takes one
//! [`Snapshot`] of the store, and puts both in the request's extensions as
//! [`Flags`]. Handlers then ask `flags.is_enabled("new-checkout")`: one
//! config for the whole request, no context rebuilt per check, and
//! outcomes recorded against the config the request was served with.
//!
//! ```
//! use std::sync::Arc;
//! use flagstone::FlagStore;
//! use flagstone::integrations::tower::{Flags, FlagsLayer};
//! use http::HeaderName;
//!
//! let store = Arc::new(FlagStore::new());
//! // Tenant, region and user from these headers (the defaults shown);
//! // a name read from your own config works too.
//! let tenant_header: String = "x-tenant-id".into();
//! let layer = FlagsLayer::new(store.clone())
//!     .tenant_header(HeaderName::try_from(tenant_header)?)
//!     .region_header(HeaderName::from_static("x-region"))
//!     .user_header(HeaderName::from_static("x-user-id"));
//! // With axum: Router::new().route(..).layer(layer), and in a handler:
//! fn handler(flags: &Flags) -> &'static str {
//!     if flags.is_enabled("new-checkout") { "new" } else { "old" }
//! }
//! # let _ = (layer, handler as fn(&Flags) -> &'static str);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A context from what an authentication middleware left in the
//! request's extensions, and the URI:
//!
//! ```
//! use std::sync::Arc;
//! use flagstone::{ContextBuf, FlagStore};
//! use flagstone::integrations::tower::FlagsLayer;
//!
//! #[derive(Clone)]
//! struct Claims { org: String, user: String }
//!
//! let layer = FlagsLayer::new(Arc::new(FlagStore::new())).context_with(|parts| {
//!     let mut ctx = ContextBuf::new();
//!     if let Some(claims) = parts.extensions.get::<Claims>() {
//!         ctx = ctx.tenant(claims.org.as_str()).user(claims.user.as_str());
//!     }
//!     if parts.uri.path().starts_with("/api/v2/") {
//!         ctx = ctx.attr("api", "v2");
//!     }
//!     ctx
//! });
//! # let _ = layer;
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::request::Parts;
use http::{HeaderName, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::{ContextBuf, Evaluation, FlagStore, Outcome, Snapshot};

type Extract = Arc<dyn Fn(&Parts) -> ContextBuf + Send + Sync>;

/// A request's flags: the snapshot taken when it arrived and its context.
/// Handlers get it from the request's extensions (`Extension<Flags>` in
/// axum).
#[derive(Clone, Debug)]
pub struct Flags {
    snapshot: Snapshot,
    context: ContextBuf,
}

impl Flags {
    /// Flags for a context outside a request (tests, background jobs): a
    /// snapshot of `store` as it is now.
    pub fn new(store: &FlagStore, context: ContextBuf) -> Self {
        Self { snapshot: store.snapshot(), context }
    }

    /// Whether `flag` is on for this request.
    pub fn is_enabled(&self, flag: &str) -> bool {
        self.snapshot.is_enabled(flag, &self.context.as_context())
    }

    /// Whether `flag` is on for this request, its variant, and why.
    pub fn evaluate(&self, flag: &str) -> Evaluation<'_> {
        self.snapshot.evaluate(flag, &self.context.as_context())
    }

    /// The variant of `flag` for this request.
    pub fn variant(&self, flag: &str) -> Option<&str> {
        self.evaluate(flag).variant
    }

    /// Records what the request came to, for `flag`'s stage in the config
    /// the request was served with ([`Snapshot::record`]): a push that
    /// lands mid-request does not move its outcome to another stage.
    pub fn record(&self, flag: &str, outcome: Outcome) {
        self.snapshot.record(flag, &self.context.as_context(), outcome);
    }

    /// The request's context.
    pub fn context(&self) -> &ContextBuf {
        &self.context
    }

    /// The snapshot the request sees.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// The layer: see the [module docs](self).
#[derive(Clone)]
pub struct FlagsLayer {
    store: Arc<FlagStore>,
    extract: Extract,
    /// The tenant, region and user headers, while no `context_with` replaced
    /// them.
    headers: Option<[HeaderName; 3]>,
}

impl FlagsLayer {
    /// Contexts from the headers `x-tenant-id`, `x-region` and `x-user-id`.
    pub fn new(store: Arc<FlagStore>) -> Self {
        let headers = default_headers();
        Self { store, extract: from_headers(headers.clone()), headers: Some(headers) }
    }

    /// Takes the tenant from this header (replaces a
    /// [`context_with`](FlagsLayer::context_with) function).
    #[must_use]
    pub fn tenant_header(self, name: HeaderName) -> Self {
        self.header(0, name)
    }

    /// Takes the region from this header (replaces a
    /// [`context_with`](FlagsLayer::context_with) function).
    #[must_use]
    pub fn region_header(self, name: HeaderName) -> Self {
        self.header(1, name)
    }

    /// Takes the user from this header (replaces a
    /// [`context_with`](FlagsLayer::context_with) function).
    #[must_use]
    pub fn user_header(self, name: HeaderName) -> Self {
        self.header(2, name)
    }

    fn header(mut self, which: usize, name: HeaderName) -> Self {
        let mut headers = self.headers.take().unwrap_or_else(default_headers);
        headers[which] = name;
        self.extract = from_headers(headers.clone());
        self.headers = Some(headers);
        self
    }

    /// Builds each request's context with `extract` instead of the
    /// headers: it sees the request head (URI, method, headers, and the
    /// extensions set by middleware that ran before, such as a token's
    /// claims).
    #[must_use]
    pub fn context_with(
        mut self,
        extract: impl Fn(&Parts) -> ContextBuf + Send + Sync + 'static,
    ) -> Self {
        self.extract = Arc::new(extract);
        self.headers = None;
        self
    }
}

fn default_headers() -> [HeaderName; 3] {
    [
        HeaderName::from_static("x-tenant-id"),
        HeaderName::from_static("x-region"),
        HeaderName::from_static("x-user-id"),
    ]
}

fn from_headers(names: [HeaderName; 3]) -> Extract {
    Arc::new(move |parts: &Parts| {
        let [tenant, region, user] =
            names.each_ref().map(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()));
        let mut ctx = ContextBuf::new();
        if let Some(t) = tenant {
            ctx = ctx.tenant(t);
        }
        if let Some(r) = region {
            ctx = ctx.region(r);
        }
        if let Some(u) = user {
            ctx = ctx.user(u);
        }
        ctx
    })
}

impl fmt::Debug for FlagsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagsLayer").field("headers", &self.headers).finish_non_exhaustive()
    }
}

impl<S> Layer<S> for FlagsLayer {
    type Service = FlagsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FlagsService { inner, layer: self.clone() }
    }
}

/// The service [`FlagsLayer`] wraps around yours.
#[derive(Clone, Debug)]
pub struct FlagsService<S> {
    inner: S,
    layer: FlagsLayer,
}

impl<S, B> Service<Request<B>> for FlagsService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let context = (self.layer.extract)(&parts);
        parts.extensions.insert(Flags::new(&self.layer.store, context));
        self.inner.call(Request::from_parts(parts, body))
    }
}
