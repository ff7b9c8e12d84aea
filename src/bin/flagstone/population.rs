//! A population of contexts, to count a change's blast radius exactly.
//!
//! CSV with a header row (`tenant`, `region`, `user`; any other column is an
//! attribute), or JSON lines (one object a line with the same keys, or an
//! `attributes` object).

use std::path::Path;

use anyhow::{Context as _, bail};
use flagstone::ContextBuf;

/// Sets one column (or JSON key) of a unit: `tenant`, `region` and `user`
/// are those, anything else an attribute; an empty value is no value.
fn set(unit: &mut ContextBuf, key: &str, value: String) {
    if value.is_empty() {
        return;
    }
    *unit = match key {
        "tenant" => std::mem::take(unit).tenant(value),
        "region" => std::mem::take(unit).region(value),
        "user" => std::mem::take(unit).user(value),
        _ => std::mem::take(unit).attr(key, value),
    };
}

pub fn load(path: &Path) -> anyhow::Result<Vec<ContextBuf>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        || !text.trim_start().starts_with('{');
    let units = if is_csv { csv_units(&text) } else { json_units(&text) }
        .with_context(|| format!("{}: not a population file", path.display()))?;
    if units.is_empty() {
        bail!("{}: the population is empty", path.display());
    }
    Ok(units)
}

fn csv_units(text: &str) -> anyhow::Result<Vec<ContextBuf>> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    let mut units = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("line {}", i + 2))?;
        let mut unit = ContextBuf::new();
        for (key, value) in header.iter().zip(record.iter()) {
            set(&mut unit, key, value.to_owned());
        }
        units.push(unit);
    }
    Ok(units)
}

fn json_units(text: &str) -> anyhow::Result<Vec<ContextBuf>> {
    let mut units = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).with_context(|| format!("line {}", i + 1))?;
        let mut unit = ContextBuf::new();
        for (key, v) in value {
            match (key.as_str(), v) {
                ("attributes", serde_json::Value::Object(attrs)) => {
                    for (k, v) in attrs {
                        set(&mut unit, &k, scalar(v));
                    }
                }
                (_, v) => set(&mut unit, &key, scalar(v)),
            }
        }
        units.push(unit);
    }
    Ok(units)
}

fn scalar(v: serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}
