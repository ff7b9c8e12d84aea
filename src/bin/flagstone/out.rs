//! Output for people: aligned tables, color only on a terminal, and
//! nothing a terminal would act on.
//!
//! Every line goes through [`write`]: control characters and
//! bidirectional overrides from configs, populations or file names are
//! escaped (`\u{1b}`), so a config cannot clear a release manager's
//! screen or reorder what a line says; only this tool's own colors pass,
//! and only on a terminal. A closed pipe (`flagstone bucket … | head -1`)
//! ends the output quietly; any other write error (a full disk) is an
//! error of the command.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether colors are on (a terminal, and `NO_COLOR` not set).
static COLOR: AtomicBool = AtomicBool::new(false);
/// Whether stdout was closed by its reader.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// The SGR codes [`Style`] writes: bold, red, green, yellow, reset.
const OWN_CODES: [&str; 5] = ["1", "31", "32", "33", "0"];

/// Writes text to stdout, made safe for a terminal (see the module docs).
pub fn write(text: &str) -> std::io::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let safe = safe(text, COLOR.load(Ordering::Relaxed));
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(safe.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Writes JSON to stdout: serde already escapes control characters in
/// strings; bidirectional overrides are escaped the JSON way.
pub fn write_json(text: &str) -> std::io::Result<()> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_bidi_control(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    write(&out)
}

/// Writes a line to stderr, made safe; errors there are dropped (there is
/// nowhere left to report them).
pub fn write_err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", safe(text, false));
}

/// `text` with every control character but newlines and tabs escaped, and
/// every bidirectional override; with `colors`, this tool's own SGR codes
/// kept.
fn safe(text: &str, colors: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b' && colors {
            let sgr = rest.get(1..).and_then(|r| r.strip_prefix('[')).and_then(|r| {
                let end = r.find('m')?;
                OWN_CODES.contains(&&r[..end]).then_some(end + 3)
            });
            if let Some(len) = sgr {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
        }
        if (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `println!` through [`write`]; returns from the calling function with
/// the write error, if there is one.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write(&format!("{}\n", format_args!($($arg)*)))
            .map_err($crate::out::write_error)?
    };
}

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(&format!($($arg)*)).map_err($crate::out::write_error)? };
}

/// A failed write to stdout, as the command's error.
pub fn write_error(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot write the output: {e}")
}

pub(crate) use {out, outln};

/// Colors, on only when stdout is a terminal and `NO_COLOR` is not set.
#[derive(Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = std::io::stdout().is_terminal() && !no_color;
        COLOR.store(color, Ordering::Relaxed);
        Self { color }
    }

    /// No colors (for Markdown and files).
    pub fn plain() -> Self {
        Self { color: false }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }
    pub fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }
}

/// A table printed with its columns aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, each line indented by `indent` spaces. Widths count
    /// characters without color codes; a cell wider than [`MAX_CELL`] wraps
    /// at spaces onto lines of its own column.
    pub fn render(&self, indent: usize, style: Style) -> String {
        let width = |s: &str| strip_ansi(s).chars().count();
        let header: Vec<String> = self.header.iter().map(|h| style.bold(h)).collect();
        let wrapped: Vec<Vec<Vec<String>>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|cell| wrap(cell, MAX_CELL)).collect())
            .collect();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &wrapped {
            for (i, lines) in row.iter().enumerate() {
                if i >= widths.len() {
                    widths.push(0);
                }
                widths[i] = lines.iter().map(|l| width(l)).fold(widths[i], usize::max);
            }
        }
        let line = |cells: &[&str]| {
            let mut out = " ".repeat(indent);
            for (i, cell) in cells.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&header.iter().map(String::as_str).collect::<Vec<_>>());
        for row in &wrapped {
            let height = row.iter().map(Vec::len).max().unwrap_or(1);
            for n in 0..height {
                let cells: Vec<&str> =
                    row.iter().map(|lines| lines.get(n).map_or("", String::as_str)).collect();
                out.push_str(&line(&cells));
            }
        }
        out
    }
}

impl Table {
    /// The table as GitHub-flavoured Markdown, for a pull request or a
    /// change ticket: no wrapping, `|` in cells escaped.
    pub fn markdown(&self) -> String {
        let cell = |c: &str| strip_ansi(c).trim().replace('|', "\\|");
        let line = |cells: &[String]| {
            format!("| {} |\n", cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "))
        };
        let mut out = line(&self.header);
        out.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for row in &self.rows {
            let mut row = row.clone();
            row.resize(self.header.len(), String::new());
            out.push_str(&line(&row));
        }
        out
    }
}

/// `text` (the default) or `markdown`, for `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Text,
    /// Markdown tables and a summary, to paste into a pull request.
    Markdown,
}

/// The widest a table cell prints before it wraps.
pub const MAX_CELL: usize = 48;

/// `text` in lines of at most `max` characters, broken at spaces (a word
/// longer than `max` stays whole; colored text is never broken).
fn wrap(text: &str, max: usize) -> Vec<String> {
    if text.contains('\x1b') || text.chars().count() <= max {
        return vec![text.to_owned()];
    }
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split(' ') {
        let fits = current.chars().count() + 1 + word.chars().count() <= max;
        if !current.is_empty() && !fits {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines.push(current);
    lines
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A bucket threshold as a percentage: 5000 -> "5%", 12345 -> "12.345%".
pub fn percent(threshold: u32) -> String {
    let whole = threshold / 1000;
    let frac = threshold % 1000;
    if frac == 0 {
        format!("{whole}%")
    } else {
        format!("{whole}.{}%", format!("{frac:03}").trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_only_own_colors_pass() {
        assert_eq!(safe("a\x1b[2Jb\r\n\u{202e}c", false), "a\\u{1b}[2Jb\\u{d}\n\\u{202e}c");
        assert_eq!(safe("\x1b[32mok\x1b[0m \x1b[2J", true), "\x1b[32mok\x1b[0m \\u{1b}[2J");
        assert_eq!(safe("\x1b[32mok", false), "\\u{1b}[32mok");
    }
}

#[cfg(test)]
mod wrap_tests {
    use super::*;

    #[test]
    fn a_wide_cell_wraps_within_its_column() {
        let mut table = Table::new(&["flag", "exposure before", "exposure after"]);
        let wide = "~5.0% + 50% of eu (regions eu-west/eu-north) + 25% of enterprise (attributes.plan:enterprise/attributes.plan:pro) + staff (tenants: 12)";
        table.row(vec!["checkout".into(), wide.into(), "~10%".into()]);
        let text = table.render(2, Style { color: false });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 2, "{text}");
        for line in &lines {
            assert!(line.chars().count() <= 2 + 8 + 2 + MAX_CELL + 2 + 14, "{line:?} in\n{text}");
        }
        // The words are all there, in order, and the last column stays on
        // the row's first line.
        let joined: Vec<&str> = lines[1..].iter().flat_map(|l| l.split_whitespace()).collect();
        assert!(
            joined
                .join(" ")
                .contains("enterprise (attributes.plan:enterprise/attributes.plan:pro)")
        );
        assert!(lines[1].trim_end().ends_with("~10%"), "{text}");
    }
}
