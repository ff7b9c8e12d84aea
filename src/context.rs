//! The evaluation context: who is asking.

use std::fmt;

/// How many attributes a [`Context`] holds without touching the heap.
pub const INLINE_ATTRIBUTES: usize = 8;

/// Who a flag is evaluated for: a tenant, a region, a user and attributes.
///
/// A context borrows its strings, so a request builds one from the values it
/// already holds; with up to [`INLINE_ATTRIBUTES`] attributes, building it
/// does not allocate. Setting an attribute twice keeps the last value.
///
/// # Example
///
/// ```
/// use flagstone::Context;
///
/// let ctx = Context::new()
///     .tenant("acme")
///     .region("eu-west")
///     .user("u-42")
///     .attr("plan", "enterprise");
/// assert_eq!(ctx.get_tenant(), Some("acme"));
/// assert_eq!(ctx.get_attr("plan"), Some("enterprise"));
/// assert_eq!(ctx.get_attr("seats"), None);
/// ```
#[derive(Clone, Default)]
pub struct Context<'a> {
    tenant: Option<&'a str>,
    region: Option<&'a str>,
    user: Option<&'a str>,
    inline: [(&'a str, &'a str); INLINE_ATTRIBUTES],
    inline_len: usize,
    // Only a context with more than INLINE_ATTRIBUTES attributes allocates.
    spill: Vec<(&'a str, &'a str)>,
}

impl<'a> Context<'a> {
    /// An empty context: no tenant, region, user or attributes.
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the tenant.
    #[inline]
    #[must_use]
    pub fn tenant(mut self, tenant: &'a str) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Sets the region.
    #[inline]
    #[must_use]
    pub fn region(mut self, region: &'a str) -> Self {
        self.region = Some(region);
        self
    }

    /// Sets the user.
    #[inline]
    #[must_use]
    pub fn user(mut self, user: &'a str) -> Self {
        self.user = Some(user);
        self
    }

    /// Sets an attribute, replacing an earlier value for the same key.
    #[inline]
    #[must_use]
    pub fn attr(mut self, key: &'a str, value: &'a str) -> Self {
        self.set_attr(key, value);
        self
    }

    /// Sets an attribute in place, replacing an earlier value for the same key.
    pub fn set_attr(&mut self, key: &'a str, value: &'a str) {
        if let Some(slot) = self.attrs_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else if self.inline_len < INLINE_ATTRIBUTES {
            self.inline[self.inline_len] = (key, value);
            self.inline_len += 1;
        } else {
            self.spill.push((key, value));
        }
    }

    /// The tenant, if set.
    #[inline]
    pub fn get_tenant(&self) -> Option<&'a str> {
        self.tenant
    }

    /// The region, if set.
    #[inline]
    pub fn get_region(&self) -> Option<&'a str> {
        self.region
    }

    /// The user, if set.
    #[inline]
    pub fn get_user(&self) -> Option<&'a str> {
        self.user
    }

    /// The value of an attribute, if set.
    #[inline]
    pub fn get_attr(&self, key: &str) -> Option<&'a str> {
        self.attrs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every attribute, in the order first set.
    pub fn attrs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        let inline = self.inline.get(..self.inline_len).unwrap_or_default();
        inline.iter().chain(self.spill.iter()).copied()
    }

    fn attrs_mut(&mut self) -> impl Iterator<Item = &mut (&'a str, &'a str)> {
        let inline = self.inline.get_mut(..self.inline_len).unwrap_or_default();
        inline.iter_mut().chain(self.spill.iter_mut())
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("tenant", &self.tenant)
            .field("region", &self.region)
            .field("user", &self.user)
            .field("attrs", &DebugAttrs(self))
            .finish()
    }
}

struct DebugAttrs<'c, 'a>(&'c Context<'a>);

impl fmt::Debug for DebugAttrs<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.attrs()).finish()
    }
}

/// A [`Context`] that owns its strings: for contexts that outlive the data
/// they came from (a request's extensions, a population file, a queue).
/// Borrow it with [`ContextBuf::as_context`] to check flags.
///
/// # Example
///
/// ```
/// use flagstone::{ContextBuf, FlagStore};
///
/// let store = FlagStore::from_json(r#"{ "version": 1, "flags": { "a": { "enabled": true } } }"#)?;
/// let owned = ContextBuf::new().tenant("acme").attr("plan", "pro");
/// assert!(store.is_enabled("a", &owned.as_context()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextBuf {
    tenant: Option<String>,
    region: Option<String>,
    user: Option<String>,
    attrs: Vec<(String, String)>,
}

impl ContextBuf {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the region.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the user.
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets an attribute (the last value set for a key wins).
    #[must_use]
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(key, value);
        self
    }

    /// Sets an attribute in place.
    pub fn set_attr(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.attrs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((key, value)),
        }
    }

    /// The tenant, if set.
    pub fn get_tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The region, if set.
    pub fn get_region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The user, if set.
    pub fn get_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The attribute's value, if set.
    pub fn get_attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The attributes, in the order they were first set.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The context, borrowed: what checks take. Does not allocate for up
    /// to [`INLINE_ATTRIBUTES`] attributes.
    pub fn as_context(&self) -> Context<'_> {
        let mut ctx = Context::new();
        if let Some(t) = &self.tenant {
            ctx = ctx.tenant(t);
        }
        if let Some(r) = &self.region {
            ctx = ctx.region(r);
        }
        if let Some(u) = &self.user {
            ctx = ctx.user(u);
        }
        for (k, v) in &self.attrs {
            ctx.set_attr(k, v);
        }
        ctx
    }
}

impl From<&Context<'_>> for ContextBuf {
    fn from(ctx: &Context<'_>) -> Self {
        Self {
            tenant: ctx.get_tenant().map(str::to_owned),
            region: ctx.get_region().map(str::to_owned),
            user: ctx.get_user().map(str::to_owned),
            attrs: ctx.attrs().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_past_the_inline_capacity_spill_and_stay_findable() {
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        let mut ctx = Context::new();
        for k in &keys {
            ctx.set_attr(k, k);
        }
        for k in &keys {
            assert_eq!(ctx.get_attr(k), Some(k.as_str()));
        }
        assert_eq!(ctx.attrs().count(), 12);
    }

    #[test]
    fn an_owned_context_borrows_back_to_the_same_context() {
        let ctx = Context::new().tenant("t").region("r").user("u").attr("a", "1").attr("b", "2");
        let owned = ContextBuf::from(&ctx).attr("a", "3");
        let back = owned.as_context();
        assert_eq!(
            (back.get_tenant(), back.get_region(), back.get_user()),
            (Some("t"), Some("r"), Some("u"))
        );
        assert_eq!(back.attrs().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
    }

    #[test]
    fn setting_an_attribute_twice_keeps_the_last_value() {
        let ctx = Context::new().attr("plan", "free").attr("plan", "enterprise");
        assert_eq!(ctx.get_attr("plan"), Some("enterprise"));
        assert_eq!(ctx.attrs().count(), 1);
    }
}
