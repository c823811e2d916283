//! Loading guild specs from TOML or JSON files, and checking them against what is
//! registered, with errors that name the file, the line and the field.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::GuildError;
use crate::{Error, GuildSpec};

/// One problem in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file (or the name given to a parsed string).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field, as a path such as `agents[1].type`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.field.is_empty() && self.field != "." {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a spec file, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecErrors> for Error {
    fn from(errors: SpecErrors) -> Self {
        GuildError::Spec(errors).into()
    }
}

/// A guild spec together with the text it was parsed from, so later checks can point
/// at lines.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// Where it came from.
    pub file: PathBuf,
    /// The text.
    pub source: String,
    /// The parsed spec.
    pub spec: GuildSpec,
}

/// The largest spec file read, in bytes.
pub const MAX_SPEC_BYTES: u64 = 1024 * 1024;

/// Checks a messaging backend name or URL: the reason it is refused, if it is.
pub type MessagingCheck = fn(&str) -> Result<(), String>;

/// The names a spec may refer to, beyond the agent types and resource kinds of a registry.
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    /// Execution engines that can be chosen by name.
    pub engines: Vec<String>,
    /// Messaging backends (or URL schemes) that can be chosen by name.
    pub messaging: Vec<String>,
    /// The engine an agent runs on when neither it nor the guild names one.
    pub default_engine: String,
    /// The engines that enforce resource limits.
    pub enforcing_limits: Vec<String>,
    /// Checks a messaging backend name or URL the way connecting would, without
    /// connecting: the reason it is refused, if it is.
    pub check_messaging: Option<MessagingCheck>,
    /// The messaging backends (by scheme) that bound each client's queue as an agent's
    /// `queue` setting asks.
    pub queue_limits: Vec<String>,
}

/// The formats a spec file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

impl LoadedSpec {
    /// Reads and parses the file at `path`; its extension picks the format.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SpecErrors> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let whole_file = |message: String| {
            SpecErrors(vec![SpecError {
                file: file.clone(),
                line: None,
                column: None,
                field: String::new(),
                message,
            }])
        };
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => SpecFormat::Toml,
            Some("json") => SpecFormat::Json,
            _ => {
                return Err(whole_file(
                    "unknown spec format: the file name must end in .toml or .json".into(),
                ));
            }
        };
        let metadata = std::fs::metadata(path)
            .map_err(|e| whole_file(format!("cannot read the file: {e}")))?;
        if !metadata.is_file() {
            return Err(whole_file(
                "not a regular file (a spec is read whole, so a pipe or device is refused)".into(),
            ));
        }
        if metadata.len() > MAX_SPEC_BYTES {
            return Err(whole_file(format!(
                "the file has {} bytes, over the cap of {MAX_SPEC_BYTES}",
                metadata.len()
            )));
        }
        let mut source = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_SPEC_BYTES + 1).read_to_string(&mut source))
            .map_err(|e| whole_file(format!("cannot read the file: {e}")))?;
        if source.len() as u64 > MAX_SPEC_BYTES {
            return Err(whole_file(format!(
                "the file grew past the cap of {MAX_SPEC_BYTES} bytes while it was read"
            )));
        }
        Self::parse(path, source, format)
    }

    /// A spec built in code rather than read: checks name `file` and give no lines.
    pub fn unparsed(file: impl Into<PathBuf>, spec: GuildSpec) -> Self {
        Self {
            file: file.into(),
            source: String::new(),
            spec,
        }
    }

    /// Parses `source` in `format`, naming it `file` in errors.
    pub fn parse(
        file: impl Into<PathBuf>,
        source: String,
        format: SpecFormat,
    ) -> Result<Self, SpecErrors> {
        let file = file.into();
        let parsed = match format {
            SpecFormat::Toml => parse_toml(&source),
            SpecFormat::Json => parse_json(&source),
        };
        match parsed {
            Ok(spec) => Ok(Self { file, source, spec }),
            Err((position, field, message)) => {
                let (line, column) = position.unzip();
                Err(SpecErrors(vec![SpecError {
                    file: file.display().to_string(),
                    line,
                    column,
                    field,
                    message,
                }]))
            }
        }
    }
}

type ParseFailure = (Option<(usize, usize)>, String, String);

fn parse_toml(source: &str) -> Result<GuildSpec, ParseFailure> {
    let deserializer = toml::Deserializer::parse(source).map_err(|e| {
        let position = e.span().map(|span| line_column(source, span.start));
        (position, String::new(), e.message().trim().to_owned())
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let position = inner.span().map(|span| line_column(source, span.start));
        (position, field, inner.message().trim().to_owned())
    })
}

fn parse_json(source: &str) -> Result<GuildSpec, ParseFailure> {
    // serde would take a struct from an array too; a spec is an object.
    let start = source.len() - source.trim_start().len();
    if !source[start..].starts_with('{') {
        return Err((
            Some(line_column(source, start)),
            String::new(),
            "a spec must be a JSON object".to_owned(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_str(source);
    let spec: GuildSpec = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        (
            Some((inner.line(), inner.column())),
            field,
            strip_json_position(&inner.to_string()),
        )
    })?;
    deserializer.end().map_err(|e| {
        (
            Some((e.line(), e.column())),
            String::new(),
            strip_json_position(&e.to_string()),
        )
    })?;
    Ok(spec)
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Finds the `nth` line (0-based) on which `key` is set to `value`, as a TOML
/// `key = "value"` or a JSON `"key": "value"` (quoted or not), and the column of `key`.
pub(crate) fn locate(source: &str, key: &str, value: &str, nth: usize) -> Option<(usize, usize)> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, line)| assignment_column(line, key, value).map(|column| (i + 1, column)))
        .nth(nth)
}

/// Where `key` is set to `value` on `line` (or, for an empty `value`, set to anything,
/// or opened as a table), as a 1-based column.
fn assignment_column(line: &str, key: &str, value: &str) -> Option<usize> {
    if value.is_empty() {
        return key_column(line, key);
    }
    let mut from = 0;
    while let Some(found) = line[from..].find(key) {
        let start = from + found;
        let rest = line[start + key.len()..]
            .trim_start_matches('"')
            .trim_start();
        if let Some(assigned) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) {
            let assigned = assigned.trim_start();
            if assigned.starts_with('[') && assigned.contains(&format!("\"{value}\"")) {
                return Some(start + 1);
            }
            let unquoted = assigned.strip_prefix('"').unwrap_or(assigned);
            let ends_there =
                |after: &str| after.is_empty() || after.starts_with(['"', ',', ' ', '}', ']']);
            if unquoted.strip_prefix(value).is_some_and(ends_there) {
                return Some(start + 1);
            }
        }
        from = start + key.len();
    }
    None
}

/// Where `key` is set (`key =`, `"key":`) or opened as a table (`[key]`) on `line`,
/// as a whole word.
fn key_column(line: &str, key: &str) -> Option<usize> {
    let indent = line.len() - line.trim_start().len();
    if line.trim() == format!("[{key}]") {
        return Some(indent + 1);
    }
    let mut from = 0;
    while let Some(found) = line[from..].find(key) {
        let start = from + found;
        let whole = !line[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let rest = line[start + key.len()..]
            .trim_start_matches('"')
            .trim_start();
        if whole && (rest.starts_with('=') || rest.starts_with(':')) {
            return Some(start + 1);
        }
        from = start + key.len();
    }
    None
}

pub(crate) fn bump<'a>(counts: &mut HashMap<&'a str, usize>, key: &'a str) -> usize {
    let count = counts.entry(key).or_insert(0);
    *count += 1;
    *count - 1
}
