//! An [OpenFeature](https://openfeature.dev) provider over a [`FlagStore`]
//! (feature `openfeature`, `open-feature` 0.3).
//!
//! - `resolve_bool_value`: the flag on or off.
//! - `resolve_string_value`: the variant an exposed context gets; an error
//!   (so the client returns the application's default) for a context that
//!   gets none.
//! - Reasons: `Disabled` for the kill switch, `Split` for a stage with a
//!   percentage, `TargetingMatch` for a stage of cohorts (and for an
//!   exclusion), `Static` for a flag on for everyone, `Default` when no
//!   stage exposes the context, `Other("override")` for a local override,
//!   and an error with `FlagNotFound` for an unknown flag.
//! - Flag metadata: `stage` (the exposing stage, or the group label) and
//!   `version` (of the config).
//!
//! The evaluation context maps as: `targeting_key` → user; custom fields
//! `tenant`, `region` and `user` → the same; any other field → an attribute
//! (numbers and booleans as their text, as a config lists them).
//!
//! ```
//! use std::sync::Arc;
//! use flagstone::FlagStore;
//! use flagstone::integrations::openfeature::FlagstoneProvider;
//! use open_feature::{EvaluationContext, OpenFeature};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let store = Arc::new(FlagStore::from_json(r#"{ "version": 1, "flags": {
//!     "new-checkout": { "enabled": true } } }"#)?);
//! let mut api = OpenFeature::default(); // or OpenFeature::singleton_mut().await
//! api.set_provider(FlagstoneProvider::new(store)).await;
//! let client = api.create_client();
//! let ctx = EvaluationContext::default().with_targeting_key("u-42").with_custom_field("tenant", "acme");
//! let on = client.get_bool_value("new-checkout", Some(&ctx), None).await;
//! assert_eq!(on.ok(), Some(true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode,
    EvaluationReason, EvaluationResult, FlagMetadata, StructValue, Value,
};

use crate::{Context, Evaluation, FlagStore, Reason, Snapshot};

/// An OpenFeature provider answering from a [`FlagStore`].
#[derive(Debug, Clone)]
pub struct FlagstoneProvider {
    store: Arc<FlagStore>,
    metadata: ProviderMetadata,
}

impl FlagstoneProvider {
    /// A provider over `store` (keep a clone of the `Arc` to apply configs).
    pub fn new(store: Arc<FlagStore>) -> Self {
        Self { store, metadata: ProviderMetadata::new("flagstone") }
    }

    /// Evaluates `flag` for an OpenFeature context, with the snapshot used.
    fn evaluate(&self, flag: &str, context: &EvaluationContext) -> (Snapshot, Details) {
        let snapshot = self.store.snapshot();
        let owned = OwnedFields::new(context);
        let ev = snapshot.evaluate(flag, &owned.context());
        let details = Details::new(&snapshot, flag, ev);
        (snapshot, details)
    }
}

/// What the two resolutions share.
struct Details {
    enabled: bool,
    variant: Option<String>,
    value: Option<serde_json::Value>,
    reason: Result<EvaluationReason, EvaluationError>,
    metadata: FlagMetadata,
}

impl Details {
    fn new(snapshot: &Snapshot, flag: &str, ev: Evaluation<'_>) -> Self {
        let reason = match ev.reason {
            Reason::UnknownFlag => Err(EvaluationError {
                code: EvaluationErrorCode::FlagNotFound,
                message: Some(format!("no flag {flag:?} in config version {}", snapshot.version())),
            }),
            Reason::KillSwitch => Ok(EvaluationReason::Disabled),
            Reason::Excluded { .. } => Ok(EvaluationReason::TargetingMatch),
            Reason::Enabled => Ok(EvaluationReason::Static),
            Reason::Stage { index, .. } => Ok(match snapshot.stage_shape(flag, index) {
                Some((_, true)) => EvaluationReason::Split,
                Some((true, false)) => EvaluationReason::TargetingMatch,
                _ => EvaluationReason::Static,
            }),
            Reason::NotExposed => Ok(EvaluationReason::Default),
            // Held back by a guard: off, by a percentage of a holdback.
            Reason::HeldBack { .. } => Ok(EvaluationReason::Split),
            // Off because a flag it requires is off for the context.
            Reason::Prerequisite { .. } => Ok(EvaluationReason::TargetingMatch),
            Reason::Override { .. } => Ok(EvaluationReason::Other("override".to_owned())),
        };
        let version = i64::try_from(snapshot.version()).unwrap_or(i64::MAX);
        let metadata = FlagMetadata::default()
            .with_value("stage", ev.reason.label())
            .with_value("version", version);
        Self {
            enabled: ev.enabled,
            variant: ev.variant.map(str::to_owned),
            value: ev.value.cloned(),
            reason,
            metadata,
        }
    }
}

/// The fields of an OpenFeature context as strings a [`Context`] borrows.
struct OwnedFields<'c> {
    user: Option<&'c str>,
    fields: Vec<(&'c str, Cow<'c, str>)>,
}

impl<'c> OwnedFields<'c> {
    fn new(context: &'c EvaluationContext) -> Self {
        let fields = context
            .custom_fields
            .iter()
            .filter_map(|(key, value)| {
                let text = match value {
                    EvaluationContextFieldValue::String(s) => Cow::Borrowed(s.as_str()),
                    EvaluationContextFieldValue::Bool(b) => Cow::Owned(b.to_string()),
                    EvaluationContextFieldValue::Int(i) => Cow::Owned(i.to_string()),
                    EvaluationContextFieldValue::Float(f) => Cow::Owned(f.to_string()),
                    // Times and structures have no text a config could list.
                    _ => return None,
                };
                Some((key.as_str(), text))
            })
            .collect();
        Self { user: context.targeting_key.as_deref(), fields }
    }

    fn context(&self) -> Context<'_> {
        let mut ctx = Context::new();
        if let Some(user) = self.user {
            ctx = ctx.user(user);
        }
        for (key, value) in &self.fields {
            match *key {
                "tenant" => ctx = ctx.tenant(value),
                "region" => ctx = ctx.region(value),
                "user" if self.user.is_none() => ctx = ctx.user(value),
                key => ctx.set_attr(key, value),
            }
        }
        ctx
    }
}

fn type_mismatch(flag: &str, what: &str, value: &serde_json::Value) -> EvaluationError {
    EvaluationError {
        code: EvaluationErrorCode::TypeMismatch,
        message: Some(format!("flag {flag:?} has the value {value}, not {what}")),
    }
}

/// No value for the context: off, or none configured. The client returns
/// the application's default.
fn no_value(flag: &str, details: &Details) -> EvaluationError {
    let why =
        if details.enabled { "the flag has no value for it" } else { "the flag is off for it" };
    EvaluationError {
        code: EvaluationErrorCode::General(format!("flag {flag:?} gives this context no value")),
        message: Some(why.to_owned()),
    }
}

/// A JSON value as OpenFeature's.
fn to_value(value: &serde_json::Value) -> Option<Value> {
    Some(match value {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => {
            Value::Array(items.iter().filter_map(to_value).collect())
        }
        serde_json::Value::Object(fields) => Value::Struct(StructValue {
            fields: fields.iter().filter_map(|(k, v)| Some((k.clone(), to_value(v)?))).collect(),
        }),
        serde_json::Value::Null => return None,
    })
}

impl FlagstoneProvider {
    /// Resolves a flag's value into the type asked for, or says why not.
    fn typed<T>(
        &self,
        flag: &str,
        context: &EvaluationContext,
        what: &str,
        read: impl Fn(&serde_json::Value) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let (_, d) = self.evaluate(flag, context);
        let reason = d.reason.clone()?;
        let Some(value) = &d.value else { return Err(no_value(flag, &d)) };
        let typed = read(value).ok_or_else(|| type_mismatch(flag, what, value))?;
        Ok(ResolutionDetails {
            value: typed,
            variant: d.variant,
            reason: Some(reason),
            flag_metadata: Some(d.metadata),
        })
    }
}

#[open_feature::async_trait]
impl FeatureProvider for FlagstoneProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        ProviderStatus::Ready
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        let (_, d) = self.evaluate(flag_key, evaluation_context);
        let reason = d.reason?;
        Ok(ResolutionDetails {
            value: d.enabled,
            variant: d.variant,
            reason: Some(reason),
            flag_metadata: Some(d.metadata),
        })
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        let (_, d) = self.evaluate(flag_key, evaluation_context);
        // A string value when the context has one; else the variant's name.
        if let Some(serde_json::Value::String(text)) = &d.value {
            let reason = d.reason.clone()?;
            return Ok(ResolutionDetails {
                value: text.clone(),
                variant: d.variant,
                reason: Some(reason),
                flag_metadata: Some(d.metadata),
            });
        }
        let reason = d.reason?;
        let Some(variant) = d.variant else {
            return Err(EvaluationError {
                code: EvaluationErrorCode::General(format!(
                    "flag {flag_key:?} gives this context no variant ({reason})"
                )),
                message: Some("the context is not exposed, or the flag has no variants".into()),
            });
        };
        Ok(ResolutionDetails {
            value: variant.clone(),
            variant: Some(variant),
            reason: Some(reason),
            flag_metadata: Some(d.metadata),
        })
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.typed(flag_key, evaluation_context, "an integer", serde_json::Value::as_i64)
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.typed(flag_key, evaluation_context, "a float", serde_json::Value::as_f64)
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.typed(flag_key, evaluation_context, "a structure", |v| match to_value(v)? {
            Value::Struct(s) => Some(s),
            _ => None,
        })
    }
}
