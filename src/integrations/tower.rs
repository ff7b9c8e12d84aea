//! A tower layer that gives each request its flags (feature `tower`).
//!
//! [`FlagsLayer`] builds the request's context once, from its headers (or
//! with a function you give), takes one [`Snapshot`] of the store, and puts
//! both in the request's extensions as [`Flags`]. Handlers then ask
//! `flags.is_enabled("new-checkout")`: one config for the whole request, no
//! context rebuilt per check.
//!
//! ```
//! use std::sync::Arc;
//! use flagstone::FlagStore;
//! use flagstone::integrations::tower::{Flags, FlagsLayer};
//!
//! let store = Arc::new(FlagStore::new());
//! // Tenant, region and user from these headers (the defaults):
//! let layer = FlagsLayer::new(store.clone())
//!     .tenant_header("x-tenant-id")
//!     .region_header("x-region")
//!     .user_header("x-user-id");
//! // With axum: Router::new().route(..).layer(layer), and in a handler:
//! fn handler(flags: &Flags) -> &'static str {
//!     if flags.is_enabled("new-checkout") { "new" } else { "old" }
//! }
//! # let _ = (layer, handler as fn(&Flags) -> &'static str);
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{HeaderMap, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::{ContextBuf, Evaluation, FlagStore, Outcome, Snapshot};

type Extract = Arc<dyn Fn(&HeaderMap) -> ContextBuf + Send + Sync>;

/// A request's flags: the snapshot taken when it arrived and its context.
/// Handlers get it from the request's extensions (`Extension<Flags>` in
/// axum).
#[derive(Clone, Debug)]
pub struct Flags {
    store: Arc<FlagStore>,
    snapshot: Snapshot,
    context: ContextBuf,
}

impl Flags {
    /// Flags for a context outside a request (tests, background jobs).
    pub fn new(store: Arc<FlagStore>, context: ContextBuf) -> Self {
        Self { snapshot: store.snapshot(), store, context }
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

    /// Records what the request came to, for `flag`'s stage
    /// ([`FlagStore::record`]).
    pub fn record(&self, flag: &str, outcome: Outcome) {
        self.store.record(flag, &self.context.as_context(), outcome);
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
    headers: [&'static str; 3],
}

impl FlagsLayer {
    /// Contexts from the headers `x-tenant-id`, `x-region` and `x-user-id`.
    pub fn new(store: Arc<FlagStore>) -> Self {
        let headers = ["x-tenant-id", "x-region", "x-user-id"];
        Self { store, extract: from_headers(headers), headers }
    }

    /// Takes the tenant from this header.
    #[must_use]
    pub fn tenant_header(mut self, name: &'static str) -> Self {
        self.headers[0] = name;
        self.extract = from_headers(self.headers);
        self
    }

    /// Takes the region from this header.
    #[must_use]
    pub fn region_header(mut self, name: &'static str) -> Self {
        self.headers[1] = name;
        self.extract = from_headers(self.headers);
        self
    }

    /// Takes the user from this header.
    #[must_use]
    pub fn user_header(mut self, name: &'static str) -> Self {
        self.headers[2] = name;
        self.extract = from_headers(self.headers);
        self
    }

    /// Builds each request's context with `extract` instead of the headers
    /// (from a session, a token's claims, ...).
    #[must_use]
    pub fn context_with(
        mut self,
        extract: impl Fn(&HeaderMap) -> ContextBuf + Send + Sync + 'static,
    ) -> Self {
        self.extract = Arc::new(extract);
        self
    }
}

fn from_headers([tenant, region, user]: [&'static str; 3]) -> Extract {
    Arc::new(move |headers: &HeaderMap| {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut ctx = ContextBuf::new();
        if let Some(t) = get(tenant) {
            ctx = ctx.tenant(t);
        }
        if let Some(r) = get(region) {
            ctx = ctx.region(r);
        }
        if let Some(u) = get(user) {
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let context = (self.layer.extract)(request.headers());
        let flags = Flags::new(self.layer.store.clone(), context);
        request.extensions_mut().insert(flags);
        self.inner.call(request)
    }
}
