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
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    /// For an invalid document: the first problems found, and how many
    /// more there were.
    problems: Vec<Problem>,
    more: usize,
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Invalid => match (self.problems.as_slice(), self.more) {
                ([one], 0) => write!(f, "invalid config: {one}"),
                (listed, more) => {
                    write!(f, "invalid config ({} problems):", listed.len() + more)?;
                    for p in listed {
                        write!(f, "\n  {p}")?;
                    }
                    if more > 0 {
                        write!(f, "\n  and {more} more")?;
                    }
                    Ok(())
                }
            },
            ErrorKind::Stale { offered, newest } => write!(
                f,
                "stale config: version {offered} is not newer than version {newest}, \
                 already applied: publish it with a higher version (a rollback does not lower \
                 the newest version), or force the apply"
            ),
            ErrorKind::SameVersion { version } => write!(
                f,
                "refused: version {version} is serving and this document says version {version} \
                 with other content; bump the version to publish a change"
            ),
            ErrorKind::NoHistory => {
                f.write_str("nothing to roll back to: no earlier config is kept")
            }
        }
    }
}

/// What kind of [`Error`] it is, to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The document is malformed or breaks a rule of the format:
    /// [`Error::problems`] says where and what.
    Invalid,
    /// Its version is not newer than the newest the store applied.
    Stale {
        /// The version the document offered.
        offered: u64,
        /// The newest version the store applied (a rollback does not lower
        /// it).
        newest: u64,
    },
    /// The serving version again, with other content: an edit published
    /// without a version bump.
    SameVersion {
        /// The version.
        version: u64,
    },
    /// A rollback found no earlier config.
    NoHistory,
}

impl Error {
    /// What kind of error it is.
    ///
    /// ```
    /// use flagstone::{ErrorKind, FlagStore};
    ///
    /// let store = FlagStore::from_json(r#"{ "version": 7 }"#)?;
    /// let err = store.apply_json(r#"{ "version": 6 }"#).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Stale { offered: 6, newest: 7 });
    /// # Ok::<(), flagstone::Error>(())
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    #[cold]
    fn of(kind: ErrorKind) -> Self {
        Self { kind, problems: Vec::new(), more: 0 }
    }

    #[cold]
    pub(crate) fn invalid(problems: Vec<Problem>) -> Self {
        let mut collected = Problems::default();
        for p in problems {
            collected.push(p);
        }
        collected.into_error()
    }

    #[cold]
    pub(crate) fn stale(offered: u64, newest: u64) -> Self {
        Self::of(ErrorKind::Stale { offered, newest })
    }

    #[cold]
    pub(crate) fn same_version(version: u64) -> Self {
        Self::of(ErrorKind::SameVersion { version })
    }

    #[cold]
    pub(crate) fn no_history() -> Self {
        Self::of(ErrorKind::NoHistory)
    }

    /// The document is malformed or breaks a rule of the config format.
    pub fn is_invalid(&self) -> bool {
        self.kind == ErrorKind::Invalid
    }

    /// The document's version is not newer than one the store already
    /// applied (including [`is_same_version`](Error::is_same_version)).
    pub fn is_stale(&self) -> bool {
        matches!(self.kind, ErrorKind::Stale { .. } | ErrorKind::SameVersion { .. })
    }

    /// The document has the serving version but other content: an edit
    /// published without a version bump, which no store applies.
    pub fn is_same_version(&self) -> bool {
        matches!(self.kind, ErrorKind::SameVersion { .. })
    }

    /// A rollback found no earlier config to go back to.
    pub fn is_no_history(&self) -> bool {
        self.kind == ErrorKind::NoHistory
    }

    /// The problems of an invalid document, in document order: every one,
    /// up to [`MAX_PROBLEMS`]; empty for other errors.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// How many problems an invalid document has, listed or not.
    pub fn problem_count(&self) -> usize {
        self.problems.len() + self.more
    }
}

/// The most problems an [`Error`] lists; past them it counts ("and N
/// more"), so that a document with a million mistakes gives a message a
/// person can read, not one of megabytes.
pub const MAX_PROBLEMS: usize = 100;

/// Problems as validation finds them: the first [`MAX_PROBLEMS`] kept, the
/// rest counted.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    listed: Vec<Problem>,
    more: usize,
}

impl Problems {
    pub(crate) fn push(&mut self, problem: Problem) {
        if self.listed.len() < MAX_PROBLEMS {
            self.listed.push(problem);
        } else {
            self.more += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    #[cold]
    pub(crate) fn into_error(self) -> Error {
        Error { kind: ErrorKind::Invalid, problems: self.listed, more: self.more }
    }
}

/// A path to a named item: `parent.name`, or `parent["a.b"]` when the name
/// holds characters that would make the path ambiguous (dots, brackets,
/// quotes, spaces or control characters).
pub(crate) fn field(parent: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && !name.chars().any(|c| {
            matches!(c, '.' | '[' | ']' | '"' | '\\') || c.is_whitespace() || c.is_control()
        });
    match (plain, parent.is_empty()) {
        (true, true) => name.to_owned(),
        (true, false) => format!("{parent}.{name}"),
        (false, _) => format!("{parent}[{}]", quoted(name)),
    }
}

/// A name in double quotes, with quotes, backslashes and every control or
/// bidirectional-override character escaped, so that it prints safely on a
/// terminal.
pub(crate) fn quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The characters that reorder text on display (bidirectional embeddings,
/// overrides and isolates): in a name they hide what it says.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_names_that_would_be_ambiguous() {
        assert_eq!(field("flags", "new-checkout"), "flags.new-checkout");
        assert_eq!(field("flags", "a.b"), "flags[\"a.b\"]");
        assert_eq!(field("flags", "x[0]"), "flags[\"x[0]\"]");
        assert_eq!(field("", "flags"), "flags");
        assert_eq!(quoted("a\u{1b}[2Jb\u{202e}"), "\"a\\u{1b}[2Jb\\u{202e}\"");
    }

    #[test]
    fn long_problem_lists_are_capped_and_counted() {
        let problems: Vec<Problem> =
            (0..250).map(|i| Problem::new(format!("p{i}"), "bad")).collect();
        let e = Error::invalid(problems);
        assert_eq!((e.problems().len(), e.problem_count()), (MAX_PROBLEMS, 250));
        let text = e.to_string();
        assert!(text.starts_with("invalid config (250 problems):"), "{text}");
        assert!(text.ends_with("\n  and 150 more"), "{text}");
        assert_eq!(text.lines().count(), MAX_PROBLEMS + 2);
    }
}
