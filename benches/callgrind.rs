//! The callgrind probe: runs one case a given number of times, for
//! `tools/callgrind.sh` to count instructions under valgrind (a run of 0
//! operations subtracts the setup). Not a timing bench: it prints nothing
//! but the case's checksum, so that the work is not optimised away.
//!
//! ```sh
//! bash tools/callgrind.sh            # every case, instructions per operation
//! ```

use std::hint::black_box;
use std::sync::Arc;

use flagstone::{Context, FlagStore};

mod shared;

/// Eight tenants (and users) the checks rotate over.
const UNITS: [&str; 8] = ["u-1", "u-22", "u-333", "u-4444", "u-55555", "u-6", "u-77", "u-888"];

/// Five flags: (a) a 25% rollout by user, (b) the bench's staged flag (a
/// region cohort, 50% of tenants, a 50-tenant exclusion cohort), (c) a
/// kill switch, a flag on for everyone and a migration flag at dualwrite.
fn config() -> String {
    let exclusion: Vec<String> = (0..50).map(|i| format!("\"bank-{i}\"")).collect();
    format!(
        r#"{{ "version": 1,
          "cohorts": {{ "eu": {{ "regions": ["eu-west", "eu-north"] }},
                        "regulated": {{ "tenants": [{}] }} }},
          "flags": {{
            "a-rollout": {{ "enabled": true, "bucket_by": "user",
              "stages": [ {{ "name": "quarter", "percent": 25 }} ], "stage": "quarter" }},
            "b-staged": {{ "enabled": true, "bucket_by": "tenant", "exclude": ["regulated"],
              "stages": [ {{ "name": "eu-half", "cohorts": ["eu"], "percent": 50 }} ],
              "stage": "eu-half",
              "variants": [ {{ "name": "control", "weight": 50 }}, {{ "name": "treatment", "weight": 50 }} ] }},
            "c-killed": {{ "enabled": false, "stages": [ {{ "name": "all" }} ], "stage": "all" }},
            "everyone": {{ "enabled": true }},
            "m-dualwrite": {{ "enabled": true, "migration": true, "bucket_by": "tenant",
              "stages": [ {{ "name": "dual", "step": "dualwrite" }} ], "stage": "dual" }} }} }}"#,
        exclusion.join(",")
    )
}

/// The flags of [`rotating`]: 100,000 one-stage rollouts.
fn many() -> (String, Vec<String>) {
    let keys: Vec<String> = (0..100_000).map(|i| format!("filler-{i}")).collect();
    let flags: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                r#""{k}": {{ "enabled": true, "stages": [ {{ "name": "p", "percent": 25 }} ], "stage": "p" }}"#
            )
        })
        .collect();
    (format!(r#"{{ "version": 1, "flags": {{ {} }} }}"#, flags.join(",")), keys)
}

#[inline(always)]
fn advance(i: &mut usize, len: usize) -> usize {
    *i += 1;
    if *i >= len {
        *i = 0;
    }
    *i
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let store = Arc::new(FlagStore::from_json(config()).expect("valid"));
    let contexts: Vec<Context<'_>> =
        UNITS.iter().map(|u| Context::new().user(u).tenant(u).region("eu-west")).collect();
    let on = match case.as_str() {
        "rollout_by_key" => run(n, &contexts, &mut |c| store.is_enabled(black_box("a-rollout"), c)),
        "rollout_by_handle" => {
            let h = store.handle("a-rollout");
            run(n, &contexts, &mut |c| h.is_enabled(c))
        }
        "kill_switch_by_key" => {
            run(n, &contexts, &mut |c| store.is_enabled(black_box("c-killed"), c))
        }
        "kill_switch_by_handle" => {
            let h = store.handle("c-killed");
            run(n, &contexts, &mut |c| h.is_enabled(c))
        }
        "unknown_by_key" => {
            run(n, &contexts, &mut |c| store.is_enabled(black_box("no-such-flag"), c))
        }
        "staged_by_key" => run(n, &contexts, &mut |c| store.is_enabled(black_box("b-staged"), c)),
        "staged_by_handle" => {
            let h = store.handle("b-staged");
            run(n, &contexts, &mut |c| h.is_enabled(c))
        }
        "migration_check_by_handle" => {
            let h = store.handle("m-dualwrite");
            run(n, &contexts, &mut |c| h.is_enabled(c))
        }
        "migration_read" | "migration_write" => {
            let migrator = shared::noop_migrator(store.clone(), "m-dualwrite");
            if case == "migration_read" {
                run(n, &contexts, &mut |c| migrator.read(c, &7).is_ok())
            } else {
                run(n, &contexts, &mut |c| migrator.write(c, &7).is_ok())
            }
        }
        "rotating_by_key_100000" => {
            let (doc, keys) = many();
            let store = FlagStore::from_json(doc).expect("valid");
            // The bench's order: a stride coprime with n, so two nearly
            // sequential walks through the flags.
            let order: Vec<&str> =
                (0..keys.len()).map(|k| keys[(k * 50_001) % keys.len()].as_str()).collect();
            let mut k = 0;
            run(n, &contexts, &mut |c| store.is_enabled(order[advance(&mut k, order.len())], c))
        }
        other => {
            eprintln!("unknown case {other:?}");
            std::process::exit(2);
        }
    };
    println!("{on}");
}

/// `n` operations over the contexts in turn; how many came out on. The
/// call through `f` is inlined (each case's closure is its own type).
#[inline(always)]
fn run(n: usize, contexts: &[Context<'_>], f: &mut impl FnMut(&Context<'_>) -> bool) -> u64 {
    let (mut i, mut on) = (0, 0);
    for _ in 0..n {
        on += u64::from(f(&contexts[advance(&mut i, contexts.len())]));
    }
    on
}
