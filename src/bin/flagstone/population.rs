//! A population of contexts, to count a change's blast radius exactly.
//!
//! CSV with a header row (`tenant`, `region`, `user`; any other column is an
//! attribute), or JSON lines (one object a line with the same keys, or an
//! `attributes` object).

use std::path::Path;

use anyhow::{Context as _, bail};
use flagstone::Context;

/// One context, owned.
#[derive(Debug, Default)]
pub struct Unit {
    pub tenant: Option<String>,
    pub region: Option<String>,
    pub user: Option<String>,
    pub attrs: Vec<(String, String)>,
}

impl Unit {
    pub fn context(&self) -> Context<'_> {
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

    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        match key {
            "tenant" => self.tenant = Some(value),
            "region" => self.region = Some(value),
            "user" => self.user = Some(value),
            _ => self.attrs.push((key.to_owned(), value)),
        }
    }
}

pub fn load(path: &Path) -> anyhow::Result<Vec<Unit>> {
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

fn csv_units(text: &str) -> anyhow::Result<Vec<Unit>> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    let mut units = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("line {}", i + 2))?;
        let mut unit = Unit::default();
        for (key, value) in header.iter().zip(record.iter()) {
            unit.set(key, value.to_owned());
        }
        units.push(unit);
    }
    Ok(units)
}

fn json_units(text: &str) -> anyhow::Result<Vec<Unit>> {
    let mut units = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).with_context(|| format!("line {}", i + 1))?;
        let mut unit = Unit::default();
        for (key, v) in value {
            match (key.as_str(), v) {
                ("attributes", serde_json::Value::Object(attrs)) => {
                    for (k, v) in attrs {
                        unit.set(&k, scalar(v));
                    }
                }
                (_, v) => unit.set(&key, scalar(v)),
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
