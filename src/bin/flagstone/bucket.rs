//! `flagstone bucket`: a unit's bucket, for checking another implementation.

use std::process::ExitCode;

use serde_json::json;

use crate::out::out;
use crate::out::{Style, Table, percent};
use crate::print_json;

pub(crate) fn run(
    salt: &str,
    unleash: bool,
    units: &[String],
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    if unleash {
        return run_unleash(salt, units, as_json);
    }
    let rows: Vec<(&str, u32)> =
        units.iter().map(|u| (u.as_str(), flagstone::bucket(salt, u))).collect();
    if as_json {
        let rows: Vec<_> =
            rows.iter().map(|(u, b)| json!({ "salt": salt, "unit": u, "bucket": b })).collect();
        print_json(&json!(rows))?;
    } else {
        let mut table = Table::new(&["unit", "bucket", "in a rollout of more than"]);
        for (u, b) in rows {
            table.row(vec![u.to_owned(), b.to_string(), percent(b)]);
        }
        out!("{}", table.render(0, Style::detect()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Unleash's normalized hash: in a rollout of `p` when at most `p`.
fn run_unleash(group: &str, units: &[String], as_json: bool) -> anyhow::Result<ExitCode> {
    let rows: Vec<(&str, u32)> = units
        .iter()
        .map(|u| (u.as_str(), flagstone::unleash_normalized_hash(group, u, 100, 0)))
        .collect();
    if as_json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(u, n)| json!({ "group": group, "unit": u, "normalized": n }))
            .collect();
        print_json(&json!(rows))?;
    } else {
        let mut table = Table::new(&["unit", "normalized hash", "in a rollout of at least"]);
        for (u, n) in rows {
            table.row(vec![u.to_owned(), n.to_string(), format!("{n}%")]);
        }
        out!("{}", table.render(0, Style::detect()));
    }
    Ok(ExitCode::SUCCESS)
}
