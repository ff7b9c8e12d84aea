//! An applied config as the store keeps it for rollback and change events:
//! each cohort and flag behind its own `Arc`, shared with the version
//! before it wherever it did not change.
//!
//! A store keeps [`HISTORY`](crate::HISTORY) versions. Kept whole, sixteen
//! versions of a config with a million-tenant cohort would hold sixteen
//! copies of it; shared, they hold one, and a push that changes one flag
//! costs one flag.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Cohort, Config, Flag};

#[derive(Clone, Debug, Default)]
pub(crate) struct Retained {
    pub(crate) version: u64,
    pub(crate) cohorts: BTreeMap<String, Arc<Cohort>>,
    pub(crate) flags: BTreeMap<String, Arc<Flag>>,
}

impl Retained {
    /// Moves a parsed config in; every cohort and flag equal to the one of
    /// the same name in `previous` is shared with it, and the new copy
    /// dropped.
    pub(crate) fn new(config: Config, previous: Option<&Retained>) -> Self {
        fn share<T: PartialEq>(
            items: BTreeMap<String, T>,
            previous: Option<&BTreeMap<String, Arc<T>>>,
        ) -> BTreeMap<String, Arc<T>> {
            items
                .into_iter()
                .map(|(name, item)| {
                    let kept = previous
                        .and_then(|p| p.get(&name))
                        .filter(|p| ***p == item)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(item));
                    (name, kept)
                })
                .collect()
        }
        // Kept for as long as the version is, with no spare capacity: a
        // parsed config's lists are read to their exact length, and a
        // cloned one's are cloned to it (`apply_config`), so nothing is
        // shrunk here.
        Self {
            version: config.version,
            cohorts: share(config.cohorts, previous.map(|p| &p.cohorts)),
            flags: share(config.flags, previous.map(|p| &p.flags)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_parts_are_shared_and_changed_ones_are_not() {
        let doc = |v: u64, percent: u32| {
            Config::from_json(format!(
                r#"{{"version":{v},"cohorts":{{"big":{{"tenants":["a","b"]}}}},
                    "flags":{{"f":{{"enabled":true}},
                              "g":{{"enabled":true,"stages":[{{"name":"s","percent":{percent}}}],"stage":"s"}}}}}}"#
            ))
            .expect("valid")
        };
        let one = Retained::new(doc(1, 5), None);
        let two = Retained::new(doc(2, 10), Some(&one));
        assert!(Arc::ptr_eq(&one.cohorts["big"], &two.cohorts["big"]));
        assert!(Arc::ptr_eq(&one.flags["f"], &two.flags["f"]));
        assert!(!Arc::ptr_eq(&one.flags["g"], &two.flags["g"]));
        assert_eq!(two.version, 2);
    }

    /// What `Retained::new` no longer shrinks has no spare room to begin
    /// with, parsed or cloned.
    #[test]
    fn retained_lists_have_no_spare_capacity() {
        let parsed = Config::from_json(
            r#"{"version":1,"cohorts":{"a":{"tenants":["t"]},"b":{"tenants":["u"]}},
                "flags":{"p":{"enabled":true},
                  "f":{"enabled":true,"exclude":["a"],"requires":[{"flag":"p"}],
                       "variants":[{"name":"x","weight":1,"cohorts":["b"]}],
                       "stages":[{"name":"s","cohorts":["a","b"]},{"name":"t","percent":5}],
                       "stage":"t"}}}"#,
        )
        .expect("valid");
        for config in [parsed.clone(), parsed] {
            let retained = Retained::new(config, None);
            let f = &retained.flags["f"];
            let exact = |len: usize, cap: usize| len == cap;
            assert!(exact(f.exclude.len(), f.exclude.capacity()));
            assert!(exact(f.requires.len(), f.requires.capacity()));
            assert!(exact(f.variants.len(), f.variants.capacity()));
            assert!(exact(f.variants[0].cohorts.len(), f.variants[0].cohorts.capacity()));
            assert!(exact(f.stages.len(), f.stages.capacity()));
            assert!(f.stages.iter().all(|s| exact(s.cohorts.len(), s.cohorts.capacity())));
        }
    }
}
