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

use shared::{MIGRATIONS, USERS, advance, config, noop_migrator, scattered, staged_config};

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    // The bench's 100-flag config (its hot_path cases), every unit in
    // eu-west so that (b) reaches its exclusion and its bucket.
    let store = FlagStore::from_json(config(100)).expect("valid");
    let contexts: Vec<Context<'_>> =
        USERS.iter().map(|u| Context::new().user(u).tenant(u).region("eu-west")).collect();
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
        "migration_check_by_handle" | "migration_read" | "migration_write" => {
            let store = Arc::new(FlagStore::from_json(MIGRATIONS).expect("valid"));
            let migrator = noop_migrator(store.clone(), "m-dualwrite");
            let h = store.handle("m-dualwrite");
            match case.as_str() {
                "migration_read" => run(n, &contexts, &mut |c| migrator.read(c, &7).is_ok()),
                "migration_write" => run(n, &contexts, &mut |c| migrator.write(c, &7).is_ok()),
                _ => run(n, &contexts, &mut |c| h.is_enabled(c)),
            }
        }
        "rotating_by_key_100000" => {
            // The bench's `rotating` case: its config and its order.
            let store = FlagStore::from_json(config(100_000)).expect("valid");
            let keys = scattered(100_000);
            let mut k = 0;
            run(n, &contexts, &mut |c| store.is_enabled(&keys[advance(&mut k, keys.len())], c))
        }
        "apply_10000" => {
            // The bench's `apply` case at 10,000 flags: `n` applies, each
            // to a new store, which (as in the bench) is not dropped in
            // what is counted.
            let doc = staged_config(10_000, 1);
            let stores: Vec<FlagStore> =
                (0..n).map(|_| FlagStore::from_json(black_box(&doc)).expect("valid")).collect();
            let applied = stores.len() as u64;
            std::mem::forget(stores);
            applied
        }
        "reapply_10000" => {
            // A push of the next version over the serving one, as a
            // service applies them: the same 10,000 flags, every series
            // already numbered.
            let store = FlagStore::from_json(staged_config(10_000, 1)).expect("valid");
            // Written whatever `n` (up to 2), so that the run of none
            // subtracts their formatting.
            let docs: Vec<String> = (2..4).map(|v| staged_config(10_000, v)).collect();
            docs.iter().take(n).map(|d| store.apply_json(black_box(d)).expect("newer")).sum()
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
