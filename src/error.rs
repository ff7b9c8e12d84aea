//! The one error type of loading and applying configs.

use std::fmt;

/// One thing wrong with a config: where it is and what is wrong.
///
/// `path` points into the document the way the document is written:
/// `flags.new-checkout.stages[2].percent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    path: String,
    message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }

    /// Where in the document the problem is, such as
    /// `flags.new-checkout.stages[2].percent`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, such as `140 is not within 0..=100`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config was not applied, or a rollback could not happen.
///
/// Whatever the error, the store keeps serving the config it served before.
/// Ask what kind of error it is with the predicates; [`Error::problems`]
/// lists every problem of an invalid config, not just the first.
///
/// # Example
///
/// ```
/// let err = flagstone::FlagStore::from_json(r#"{ "version": 1, "flags": { "x": {} } }"#)
///     .unwrap_err();
/// assert!(err.is_invalid());
/// assert_eq!(err.problems()[0].path(), "flags.x");
/// assert_eq!(
///     err.to_string(),
///     "invalid config: flags.x: missing field `enabled` at line 1 column 34",
/// );
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind}")]
pub struct Error {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Invalid(Vec<Problem>),
    Stale { offered: u64, newest: u64 },
    NoHistory,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Invalid(problems) => match problems.as_slice() {
                [one] => write!(f, "invalid config: {one}"),
                many => {
                    write!(f, "invalid config ({} problems):", many.len())?;
                    for p in many {
                        write!(f, "\n  {p}")?;
                    }
                    Ok(())
                }
            },
            Kind::Stale { offered, newest } => write!(
                f,
                "stale config: version {offered} is not newer than version {newest}, \
                 already applied (roll back with `rollback()` or force the apply)"
            ),
            Kind::NoHistory => f.write_str("nothing to roll back to: no earlier config is kept"),
        }
    }
}

impl Error {
    #[cold]
    pub(crate) fn invalid(problems: Vec<Problem>) -> Self {
        Self { kind: Kind::Invalid(problems) }
    }

    #[cold]
    pub(crate) fn stale(offered: u64, newest: u64) -> Self {
        Self { kind: Kind::Stale { offered, newest } }
    }

    #[cold]
    pub(crate) fn no_history() -> Self {
        Self { kind: Kind::NoHistory }
    }

    /// The document is malformed or breaks a rule of the config format.
    pub fn is_invalid(&self) -> bool {
        matches!(self.kind, Kind::Invalid(_))
    }

    /// The document's version is not newer than one the store already applied.
    pub fn is_stale(&self) -> bool {
        matches!(self.kind, Kind::Stale { .. })
    }

    /// A rollback found no earlier config to go back to.
    pub fn is_no_history(&self) -> bool {
        matches!(self.kind, Kind::NoHistory)
    }

    /// For a stale document, the version it offered.
    pub(crate) fn stale_version(&self) -> Option<u64> {
        match self.kind {
            Kind::Stale { offered, .. } => Some(offered),
            _ => None,
        }
    }

    /// Every problem of an invalid document; empty for other errors.
    pub fn problems(&self) -> &[Problem] {
        match &self.kind {
            Kind::Invalid(problems) => problems,
            _ => &[],
        }
    }
}
