//! A flag's hot record: everything a check by key or by handle reads when
//! the flag has one of the common shapes (a kill switch, on for everyone,
//! one bare percentage stage), kept beside the key in its key index entry
//! and in the handle's slot.
//!
//! Such a check touches the index (or handle) slot, the record, the
//! context and one counter cell, never the flag record (about 230 bytes
//! over four cache lines) or its stages: with 100,000 flags that is two
//! cache misses fewer per check. Any other
//! shape, and an absent key, is told apart by [`Hot::kind`], and the check
//! walks the flag as before.

use super::{Flag, HashKind, Shortcut, Unit};
use crate::bucket::bucket_seeded;
use crate::context::Context;

/// A check's data for one key, in 24 bytes (with its key, a key index
/// entry is 40: eight to five cache lines).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hot {
    /// The unit hash's seed (for [`Kind::Below`]).
    seed: u64,
    /// The flag's index in [`super::Compiled::flags`], or `u32::MAX` when
    /// the key is absent from this config.
    pub(crate) index: u32,
    /// The evaluation cell of a check that comes out on.
    on: u32,
    /// The evaluation cell of a check that comes out off; for an absent
    /// key, its `unknown` cell.
    pub(crate) off: u32,
    /// The bucket a unit must be below (for [`Kind::Below`]): at most
    /// [`crate::bucket::BUCKETS`], 17 bits, kept as its low 16 bits and
    /// its high byte so that the record packs into 24 bytes.
    threshold_low: u16,
    threshold_high: u8,
    pub(crate) kind: Kind,
}

/// What a check of the key has to do (one byte: the unit of
/// [`Kind::Below`] shares it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The kill switch: off, counted in `off`.
    Off,
    /// No stages and no exclusions: on, counted in `on`.
    On,
    /// One bare percentage stage: on when the unit's bucket is below the
    /// threshold.
    Below(Plain),
    /// Anything else: walk the flag.
    Walk,
    /// The key is not in this config: off, counted in `off`.
    Absent,
}

/// A unit a [`Kind::Below`] check reads straight off the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plain {
    User,
    Tenant,
    Region,
}

impl Hot {
    /// A key absent from the config, counted in `unknown`.
    pub(crate) const fn absent(unknown: u32) -> Self {
        Hot {
            seed: 0,
            index: u32::MAX,
            on: unknown,
            off: unknown,
            threshold_low: 0,
            threshold_high: 0,
            kind: Kind::Absent,
        }
    }

    /// A placeholder for `flags[index]` until its record is computed.
    pub(crate) const fn pending(index: u32) -> Self {
        Hot { index, kind: Kind::Walk, ..Hot::absent(u32::MAX) }
    }

    /// The hot record of `flags[index]`, in the cells a counted check
    /// ([`Flag::is_enabled_counted`]) would count it in.
    pub(crate) fn of(flags: &[Flag], index: u32) -> Self {
        let Some(flag) = flags.get(index as usize) else { return Hot::pending(index) };
        let series = &flag.series;
        let walk = Hot { index, kind: Kind::Walk, ..Hot::absent(series.off) };
        if !flag.requires.is_empty() || flag.forced.is_some() || flag.migration {
            return walk;
        }
        match (flag.shortcut, flag.stages.as_deref()) {
            (Shortcut::Off, _) => Hot { kind: Kind::Off, ..walk },
            (Shortcut::On, None) => Hot { kind: Kind::On, on: series.first_exposed, ..walk },
            (Shortcut::Below(threshold), Some([_])) => {
                let HashKind::Xxh3 { seed, .. } = flag.hashing.kind else { return walk };
                let unit = match flag.hashing.unit {
                    Unit::User => Plain::User,
                    Unit::Tenant => Plain::Tenant,
                    Unit::Region => Plain::Region,
                    Unit::Attr(_) | Unit::FirstOf(_) => return walk,
                };
                // At most 100,000: the high byte always fits.
                let Ok(threshold_high) = u8::try_from(threshold >> 16) else { return walk };
                Hot {
                    seed,
                    on: series.first_exposed,
                    off: series.not_exposed,
                    threshold_low: threshold as u16,
                    threshold_high,
                    kind: Kind::Below(unit),
                    ..walk
                }
            }
            _ => walk,
        }
    }

    /// For any kind but [`Kind::Walk`]: whether the check is on for `ctx`,
    /// and the cell to count it in.
    #[inline]
    pub(crate) fn decide(&self, ctx: &Context<'_>) -> (bool, u32) {
        let on = match self.kind {
            Kind::Below(unit) => {
                let unit = match unit {
                    Plain::User => ctx.get_user(),
                    Plain::Tenant => ctx.get_tenant(),
                    Plain::Region => ctx.get_region(),
                };
                let threshold =
                    u32::from(self.threshold_low) | u32::from(self.threshold_high) << 16;
                unit.is_some_and(|unit| bucket_seeded(self.seed, unit) < threshold)
            }
            kind => kind == Kind::On,
        };
        (on, if on { self.on } else { self.off })
    }
}

#[cfg(test)]
mod tests {
    use super::{Kind, Plain};
    use crate::config::GuardAction;
    use crate::{Context, FlagStore, Override};

    /// One flag of every shape, and the kind of record each gets.
    const DOC: &str = r#"{ "version": 1,
      "cohorts": { "eu": { "regions": ["eu-west"] }, "vip": { "tenants": ["t-1", "t-2"] } },
      "flags": {
        "killed": { "enabled": false, "stages": [ { "name": "all", "percent": 30 } ], "stage": "all" },
        "everyone": { "enabled": true },
        "by-user": { "enabled": true, "bucket_by": "user",
          "stages": [ { "name": "q", "percent": 25 } ], "stage": "q" },
        "by-tenant": { "enabled": true, "bucket_by": "tenant",
          "stages": [ { "name": "q", "percent": 40 } ], "stage": "q" },
        "by-region": { "enabled": true, "bucket_by": "region",
          "stages": [ { "name": "q", "percent": 60 } ], "stage": "q" },
        "by-attr": { "enabled": true, "bucket_by": "plan",
          "stages": [ { "name": "q", "percent": 50 } ], "stage": "q" },
        "two-stages": { "enabled": true, "bucket_by": "user",
          "stages": [ { "name": "a", "percent": 10 }, { "name": "b", "percent": 30 } ], "stage": "b" },
        "cohort": { "enabled": true, "bucket_by": "tenant",
          "stages": [ { "name": "eu", "cohorts": ["eu"], "percent": 50 } ], "stage": "eu" },
        "excluding": { "enabled": true, "bucket_by": "tenant", "exclude": ["vip"],
          "stages": [ { "name": "half", "percent": 50 } ], "stage": "half" },
        "in-eu": { "enabled": true, "exclude": ["vip"],
          "stages": [ { "name": "eu", "cohorts": ["eu"] } ], "stage": "eu" },
        "second-stage": { "enabled": true, "bucket_by": "tenant",
          "stages": [ { "name": "eu", "cohorts": ["eu"] }, { "name": "half", "percent": 50 } ],
          "stage": "half" },
        "child": { "enabled": true, "requires": [ { "flag": "by-user" } ] },
        "held": { "enabled": true, "bucket_by": "tenant",
          "stages": [ { "name": "half", "percent": 50 } ], "stage": "half",
          "guard": { "holdback": 20, "max_error_ratio": 2.0 } },
        "unleash": { "enabled": true, "bucketing": "unleash", "bucket_by": "user",
          "stages": [ { "name": "half", "percent": 50 } ], "stage": "half" },
        "forced": { "enabled": true, "bucket_by": "user",
          "stages": [ { "name": "q", "percent": 25 } ], "stage": "q" },
        "migrating": { "enabled": true, "migration": true, "bucket_by": "tenant",
          "stages": [ { "name": "dual", "step": "dualwrite", "percent": 50 } ], "stage": "dual" }
      } }"#;

    const KINDS: [(&str, Kind); 18] = [
        ("killed", Kind::Off),
        ("everyone", Kind::On),
        ("by-user", Kind::Below(Plain::User)),
        ("by-tenant", Kind::Below(Plain::Tenant)),
        ("by-region", Kind::Below(Plain::Region)),
        ("by-attr", Kind::Walk),
        ("two-stages", Kind::Walk),
        ("cohort", Kind::Walk),
        ("excluding", Kind::Walk),
        ("in-eu", Kind::Walk),
        ("second-stage", Kind::Walk),
        ("child", Kind::Walk),
        ("held", Kind::Walk),
        ("unleash", Kind::Walk),
        ("forced", Kind::Walk),
        ("migrating", Kind::Walk),
        ("handled-only", Kind::Absent),
        ("never-heard-of", Kind::Absent),
    ];

    fn store() -> FlagStore {
        let store = FlagStore::new().with_manual_guard_checks();
        store.set_override("forced", Override::On);
        store.apply_json(DOC).expect("valid");
        store
    }

    #[test]
    fn each_shape_gets_its_kind_of_record() {
        let store = store();
        let _handle = store.handle("handled-only");
        store.apply_json(DOC.replace("\"version\": 1", "\"version\": 2")).expect("valid");
        let snapshot = store.snapshot();
        for (key, kind) in KINDS {
            assert_eq!(snapshot.compiled().hot(key).kind, kind, "{key}");
        }
    }

    /// Checks through the records answer and count exactly what the full
    /// walk (`evaluate`) does, by key and by handle, for every shape.
    #[test]
    fn a_check_through_the_record_answers_and_counts_as_the_walk_does() {
        let (checked, walked) = (store(), store());
        let units: Vec<String> = (0..400).map(|i| format!("u-{i}")).collect();
        let regions = ["eu-west", "us-east", "ap-south"];
        let handles: Vec<_> = KINDS.iter().map(|(key, _)| checked.handle(key)).collect();
        let walked_handles: Vec<_> = KINDS.iter().map(|(key, _)| walked.handle(key)).collect();
        for (i, unit) in units.iter().enumerate() {
            let tenant = if i % 50 == 7 { "t-1" } else { unit };
            let mut ctx = Context::new().region(regions[i % 3]).attr("plan", unit);
            // Some contexts lack the unit: they are off, counted not-exposed.
            if i % 9 != 0 {
                ctx = ctx.user(unit).tenant(tenant);
            }
            for (n, (key, _)) in KINDS.iter().enumerate() {
                let on = walked.evaluate(key, &ctx).enabled;
                assert_eq!(checked.is_enabled(key, &ctx), on, "{key} by key for {ctx:?}");
                assert_eq!(handles[n].is_enabled(&ctx), on, "{key} by handle for {ctx:?}");
                assert_eq!(walked_handles[n].evaluate(&ctx).enabled, on);
            }
        }
        let (a, b) = (checked.metrics(), walked.metrics());
        assert!(a.evaluations_of("by-user", "q") > 0);
        assert_eq!(a.evaluations(), b.evaluations());
    }

    #[test]
    fn a_flag_a_guard_steps_back_gets_a_new_record() {
        let store = store();
        let mut compiled = store.snapshot().compiled().clone();
        assert_eq!(compiled.step_back("by-user", 0, GuardAction::RollbackStage), Some(None));
        assert_eq!(compiled.hot("by-user").kind, Kind::Off);
        // Handles' records too.
        let _handle = store.handle("by-tenant");
        store.apply_json(DOC.replace("\"version\": 1", "\"version\": 2")).expect("valid");
        let mut compiled = store.snapshot().compiled().clone();
        let index = compiled.hot("by-tenant").index;
        let by_slot = |c: &crate::compile::Compiled| {
            c.by_slot.iter().filter(|h| h.index == index).map(|h| h.kind).collect::<Vec<_>>()
        };
        assert_eq!(by_slot(&compiled), [Kind::Below(Plain::Tenant)]);
        compiled.step_back("by-tenant", 0, GuardAction::Disable);
        assert_eq!(by_slot(&compiled), [Kind::Off]);
        assert_eq!(compiled.hot("by-tenant").kind, Kind::Off);
    }

    /// A guard stepping back an overridden or held-back flag keeps it off
    /// every shortcut: the override still answers, the holdback still
    /// holds back, in a check as in the full walk.
    #[test]
    fn a_step_back_keeps_overrides_and_holdbacks_walking() {
        let store = store();
        for (key, action) in [
            ("forced", GuardAction::Disable),
            ("forced", GuardAction::RollbackStage),
            ("held", GuardAction::RollbackStage),
        ] {
            let mut compiled = store.snapshot().compiled().clone();
            compiled.step_back(key, 0, action);
            assert_eq!(compiled.hot(key).kind, Kind::Walk, "{key}");
            for i in 0..200 {
                let unit = format!("u-{i}");
                let ctx = Context::new().user(&unit).tenant(&unit);
                let walked = compiled.evaluate(compiled.lookup(key), &ctx).enabled;
                assert_eq!(compiled.check(compiled.hot(key), &ctx), walked, "{key} for {unit}");
            }
        }
    }
}
