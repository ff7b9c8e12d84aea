//! What the criterion bench and the callgrind probe both build.

use std::hint::black_box;
use std::sync::Arc;

use flagstone::FlagStore;
use flagstone::migration::Migrator;

/// A migrator of `flag` whose reads and writes return their input and
/// whose comparison is `==`: what is left is the migrator's own work.
pub fn noop_migrator(store: Arc<FlagStore>, flag: &str) -> Migrator<u64, u64, u64, u64, ()> {
    Migrator::builder(store, flag)
        .read_old(|k: &u64| Ok::<u64, ()>(black_box(*k)))
        .read_new(|k: &u64| Ok(black_box(*k)))
        .write_old(|k: &u64| Ok(black_box(*k)))
        .write_new(|k: &u64| Ok(black_box(*k)))
        .compare(|a, b| a == b)
        .build()
        .expect("every call is given")
}
