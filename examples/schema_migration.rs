//! A staged data migration on a real SQLite database: the `users` table
//! goes from one `name` column (`users_v1`) to `first_name` and
//! `last_name` (`users_v2`), tenant by tenant, while simulated requests
//! read and write.
//!
//! The flag `users-split` is a migration flag. Its stages take internal
//! tenants, then 10% of tenants, then everyone through each step:
//! dualwrite → shadow → live → rampdown → complete. A `Migrator` runs
//! each request's reads and writes as its tenant's step says, compares
//! reads in shadow and live, and counts everything per stage, step and
//! origin. After `dualwrite` reaches everyone, a backfill copies the old
//! rows across.
//!
//! ```sh
//! cargo run --example schema_migration
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use flagstone::migration::{Migrator, Order};
use flagstone::{Context, FlagStore, MigrationStep};
use rusqlite::{Connection, OptionalExtension, params};

/// The flag.
pub const FLAG: &str = "users-split";

/// The internal tenants (the first cohort).
pub const INTERNAL: [&str; 2] = ["acme-internal", "globex-internal"];

/// How many customer tenants the simulation has.
pub const TENANTS: usize = 200;

/// Users per tenant.
pub const USERS: i64 = 40;

/// The stages: each cohort through each step, in order.
pub const STAGES: [(&str, MigrationStep, Audience); 15] = {
    use Audience::{Everyone, Internal, TenPercent};
    use MigrationStep::{Complete, DualWrite, Live, RampDown, Shadow};
    [
        ("dualwrite-internal", DualWrite, Internal),
        ("dualwrite-10", DualWrite, TenPercent),
        ("dualwrite-all", DualWrite, Everyone),
        ("shadow-internal", Shadow, Internal),
        ("shadow-10", Shadow, TenPercent),
        ("shadow-all", Shadow, Everyone),
        ("live-internal", Live, Internal),
        ("live-10", Live, TenPercent),
        ("live-all", Live, Everyone),
        ("rampdown-internal", RampDown, Internal),
        ("rampdown-10", RampDown, TenPercent),
        ("rampdown-all", RampDown, Everyone),
        ("complete-internal", Complete, Internal),
        ("complete-10", Complete, TenPercent),
        ("complete-all", Complete, Everyone),
    ]
};

/// Who a stage exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The internal cohort.
    Internal,
    /// 10% of tenants.
    TenPercent,
    /// Every tenant.
    Everyone,
}

/// The config at `version` with `current` the current stage (`None`: the
/// flag is off, every tenant on the old table).
pub fn config(version: u64, current: Option<usize>) -> String {
    let stages: Vec<String> = STAGES
        .iter()
        .map(|(name, step, audience)| {
            let who = match audience {
                Audience::Internal => r#", "cohorts": ["internal"]"#,
                Audience::TenPercent => r#", "percent": 10"#,
                Audience::Everyone => "",
            };
            format!(r#"{{ "name": "{name}", "step": "{step}"{who} }}"#)
        })
        .collect();
    let internal: Vec<String> = INTERNAL.iter().map(|t| format!("{t:?}")).collect();
    let (enabled, stage) = match current {
        Some(i) => (true, STAGES[i].0),
        None => (false, STAGES[0].0),
    };
    format!(
        r#"{{ "version": {version},
  "cohorts": {{ "internal": {{ "tenants": [{}] }} }},
  "flags": {{ "{FLAG}": {{ "enabled": {enabled}, "migration": true, "bucket_by": "tenant",
    "stages": [ {} ],
    "stage": "{stage}",
    "guard": {{ "max_mismatch_rate": 0.001, "min_units": 100, "window_secs": 60 }} }} }} }}"#,
        internal.join(", "),
        stages.join(",\n      ")
    )
}

/// The database: one SQLite file holding the old table and the new one.
pub struct Database(Mutex<Connection>);

impl Database {
    /// Opens (creates) the database at `path` with both tables.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = OFF;
             CREATE TABLE IF NOT EXISTS users_v1 (
                 id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS users_v2 (
                 id INTEGER PRIMARY KEY, tenant TEXT NOT NULL,
                 first_name TEXT NOT NULL, last_name TEXT NOT NULL);",
        )?;
        Ok(Self(Mutex::new(conn)))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every row of the old table: id → name.
    pub fn old_rows(&self) -> rusqlite::Result<BTreeMap<i64, String>> {
        let conn = self.conn();
        let mut query = conn.prepare("SELECT id, name FROM users_v1")?;
        query.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect()
    }

    /// Every row of the new table, its name joined again: id → name.
    pub fn new_rows(&self) -> rusqlite::Result<BTreeMap<i64, String>> {
        let conn = self.conn();
        let mut query = conn.prepare("SELECT id, first_name || ' ' || last_name FROM users_v2")?;
        query.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect()
    }

    /// Copies every old row into the new table (run once every tenant
    /// dual-writes, before any reads the new table).
    pub fn backfill(&self) -> rusqlite::Result<usize> {
        let rows = self.old_rows()?;
        let conn = self.conn();
        let mut copy = conn.prepare(
            "INSERT OR REPLACE INTO users_v2 (id, tenant, first_name, last_name)
             SELECT id, tenant, ?2, ?3 FROM users_v1 WHERE id = ?1",
        )?;
        for (id, name) in &rows {
            let (first, last) = split(name);
            copy.execute(params![id, first, last])?;
        }
        Ok(rows.len())
    }
}

/// A user record, as the service writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Its tenant.
    pub tenant: String,
    /// Its full name.
    pub name: String,
}

/// `first_name` is up to the first space, `last_name` the rest.
fn split(name: &str) -> (&str, &str) {
    name.split_once(' ').unwrap_or((name, ""))
}

/// What the migrator's operations are.
pub type Users = Migrator<i64, User, Option<String>, (), rusqlite::Error>;

/// The migrator of `users`: old and new reads and writes on `db`. With
/// `bug`, the new read path drops all but the last word of a last name
/// ("van Dijk" reads back as "Dijk"), as a careless join would.
pub fn users(
    store: Arc<FlagStore>,
    db: &Arc<Database>,
    bug: bool,
) -> Result<Users, Box<dyn Error>> {
    let (r_old, r_new, w_old, w_new) = (db.clone(), db.clone(), db.clone(), db.clone());
    let migrator = Migrator::builder(store, FLAG)
        .read_old(move |id: &i64| {
            r_old
                .conn()
                .query_row("SELECT name FROM users_v1 WHERE id = ?1", [id], |row| row.get(0))
                .optional()
        })
        .read_new(move |id: &i64| {
            let row: Option<(String, String)> = r_new
                .conn()
                .query_row(
                    "SELECT first_name, last_name FROM users_v2 WHERE id = ?1",
                    [id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            Ok(row.map(|(first, last)| {
                let last = if bug { last.rsplit(' ').next().unwrap_or_default() } else { &last };
                format!("{first} {last}")
            }))
        })
        .write_old(move |user: &User| {
            w_old.conn().execute(
                "INSERT OR REPLACE INTO users_v1 (id, tenant, name) VALUES (?1, ?2, ?3)",
                params![user.id, user.tenant, user.name],
            )?;
            Ok(())
        })
        .write_new(move |user: &User| {
            let (first, last) = split(&user.name);
            w_new.conn().execute(
                "INSERT OR REPLACE INTO users_v2 (id, tenant, first_name, last_name)
                 VALUES (?1, ?2, ?3, ?4)",
                params![user.id, user.tenant, first, last],
            )?;
            Ok(())
        })
        .compare(|old, new| old == new)
        .order(Order::OldFirst)
        .build()?;
    Ok(migrator)
}

/// Simulated requests: a seeded generator, the tenants, and an
/// independent ledger of every write that succeeded.
pub struct Traffic {
    state: u64,
    /// Every tenant, the internal ones first.
    pub tenants: Vec<String>,
    /// id → the name last written.
    pub ledger: BTreeMap<i64, String>,
}

/// What a run of requests saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Reads.
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Reads whose answer differed from the ledger.
    pub wrong: u64,
    /// Operations that failed.
    pub failed: u64,
}

const FIRST: [&str; 8] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"];
const LAST: [&str; 8] =
    ["Lovelace", "Hopper", "Turing", "van Dijk", "Liskov", "de la Cruz", "Allen", "Thompson"];

impl Traffic {
    /// Traffic from the seed.
    pub fn new(seed: u64) -> Self {
        let mut tenants: Vec<String> = INTERNAL.iter().map(|t| (*t).to_owned()).collect();
        tenants.extend((0..TENANTS).map(|i| format!("t-{i:03}")));
        Self { state: seed | 1, tenants, ledger: BTreeMap::new() }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `requests` requests, 40% writes, from random tenants.
    pub fn run(&mut self, users: &Users, requests: usize) -> Seen {
        let mut seen = Seen::default();
        for _ in 0..requests {
            let t = self.below(self.tenants.len() as u64) as usize;
            let id = t as i64 * 1_000 + self.below(USERS as u64) as i64;
            let tenant = self.tenants[t].clone();
            let ctx = Context::new().tenant(&tenant);
            if self.below(10) < 4 {
                let name = format!(
                    "{} {}",
                    FIRST[self.below(FIRST.len() as u64) as usize],
                    LAST[self.below(LAST.len() as u64) as usize]
                );
                seen.writes += 1;
                let user = User { id, tenant: tenant.clone(), name: name.clone() };
                match users.write(&ctx, &user) {
                    Ok(()) => {
                        self.ledger.insert(id, name);
                    }
                    Err(_) => seen.failed += 1,
                }
            } else {
                seen.reads += 1;
                match users.read(&ctx, &id) {
                    Ok(name) => seen.wrong += u64::from(name.as_ref() != self.ledger.get(&id)),
                    Err(_) => seen.failed += 1,
                }
            }
        }
        seen
    }
}

/// The ledger's rows the table lacks or holds otherwise: (id, written,
/// found).
pub fn missing(
    ledger: &BTreeMap<i64, String>,
    table: &BTreeMap<i64, String>,
) -> Vec<(i64, String, Option<String>)> {
    ledger
        .iter()
        .filter(|(id, name)| table.get(id) != Some(name))
        .map(|(id, name)| (*id, name.clone(), table.get(id).cloned()))
        .collect()
}

#[allow(dead_code)] // the integration test uses the pieces, not `main`
fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let db = Arc::new(Database::open(&dir.path().join("users.db"))?);
    let store = Arc::new(FlagStore::from_json(config(1, None))?);
    let users = users(store.clone(), &db, false)?;
    let mut traffic = Traffic::new(2026);
    println!("users: {} tenants, old table only", traffic.tenants.len());
    traffic.run(&users, 2_000);
    let mut version = 1;
    for (i, (stage, step, _)) in STAGES.iter().enumerate() {
        version += 1;
        store.apply_json(config(version, Some(i)))?;
        if *stage == "dualwrite-all" {
            println!("  backfill: {} rows copied to users_v2", db.backfill()?);
        }
        let seen = traffic.run(&users, 2_000);
        let at = |tenant: &str| store.migration_step(FLAG, &Context::new().tenant(tenant));
        let customers = traffic.tenants[INTERNAL.len()..].iter().filter(|t| at(t) == *step).count();
        println!(
            "v{version:<2} {stage:<18} internal at {:<9} {customers:>3} of {TENANTS} tenants at {step:<9} \
             {} reads ({} wrong), {} writes, {} failed",
            at(INTERNAL[0]).as_str(),
            seen.reads,
            seen.wrong,
            seen.writes,
            seen.failed,
        );
    }
    let metrics = store.metrics();
    let compared: u64 = metrics.migrations().iter().map(|m| m.comparisons).sum();
    let mismatched: u64 = metrics.migrations().iter().map(|m| m.mismatches).sum();
    let new_rows = db.new_rows()?;
    println!(
        "done: {compared} reads compared, {mismatched} mismatched; users_v2 holds {} rows, {} of the {} written differ",
        new_rows.len(),
        missing(&traffic.ledger, &new_rows).len(),
        traffic.ledger.len()
    );
    let old_rows = db.old_rows()?;
    println!(
        "users_v1 missed {} of them since tenants reached complete (stepping back now would need a copy back)",
        missing(&traffic.ledger, &old_rows).len()
    );
    Ok(())
}
