//! # spec-file
//!
//! What guild's file formats share (guild specs, graph schemas): reading a TOML or JSON
//! file whole, under a size cap and only when it is a regular file; parsing it into a
//! serde type with the line, column and field of the first problem; and finding the
//! line on which a key is set, so a later check can point at it.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;

/// The largest file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The formats a file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format a file's extension names, if any.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Some(Self::Toml),
            Some("json") => Some(Self::Json),
            _ => None,
        }
    }
}

/// Where a problem is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The field, as a path such as `agents[1].type`; empty for the whole file.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn whole_file(message: String) -> Self {
        Self {
            position: None,
            field: String::new(),
            message,
        }
    }
}

/// Reads the file at `path` whole: a regular file of at most [`MAX_FILE_BYTES`], in a
/// format its extension names.
pub fn read(path: &Path) -> Result<(String, Format), Problem> {
    let format = Format::of(path).ok_or_else(|| {
        Problem::whole_file("unknown format: the file name must end in .toml or .json".into())
    })?;
    let metadata = std::fs::metadata(path)
        .map_err(|e| Problem::whole_file(format!("cannot read the file: {e}")))?;
    if !metadata.is_file() {
        return Err(Problem::whole_file(
            "not a regular file (it is read whole, so a pipe or device is refused)".into(),
        ));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(Problem::whole_file(format!(
            "the file has {} bytes, over the cap of {MAX_FILE_BYTES}",
            metadata.len()
        )));
    }
    let mut source = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_string(&mut source))
        .map_err(|e| Problem::whole_file(format!("cannot read the file: {e}")))?;
    if source.len() as u64 > MAX_FILE_BYTES {
        return Err(Problem::whole_file(format!(
            "the file grew past the cap of {MAX_FILE_BYTES} bytes while it was read"
        )));
    }
    Ok((source, format))
}

/// Parses `source`, written in `format`, into a `T`; a JSON file must hold an object.
pub fn parse<T: DeserializeOwned>(source: &str, format: Format) -> Result<T, Problem> {
    match format {
        Format::Toml => parse_toml(source),
        Format::Json => parse_json(source),
    }
}

fn parse_toml<T: DeserializeOwned>(source: &str) -> Result<T, Problem> {
    let deserializer = toml::Deserializer::parse(source).map_err(|e| Problem {
        position: e.span().map(|span| line_column(source, span.start)),
        field: String::new(),
        message: e.message().trim().to_owned(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        Problem {
            position: inner.span().map(|span| line_column(source, span.start)),
            field,
            message: inner.message().trim().to_owned(),
        }
    })
}

fn parse_json<T: DeserializeOwned>(source: &str) -> Result<T, Problem> {
    // serde would take a struct from an array too; a file is an object.
    let start = source.len() - source.trim_start().len();
    if !source[start..].starts_with('{') {
        return Err(Problem {
            position: Some(line_column(source, start)),
            field: String::new(),
            message: "the file must be a JSON object".to_owned(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_str(source);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        Problem {
            position: Some((inner.line(), inner.column())),
            field,
            message: strip_json_position(&inner.to_string()),
        }
    })?;
    deserializer.end().map_err(|e| Problem {
        position: Some((e.line(), e.column())),
        field: String::new(),
        message: strip_json_position(&e.to_string()),
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The 1-based line and column of byte `offset` of `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Finds the `nth` line (0-based) on which `key` is set to `value`, as a TOML
/// `key = "value"` or a JSON `"key": "value"` (quoted or not), and the column of `key`;
/// an empty `value` matches any value, or a table opened as `[key]`.
pub fn locate(source: &str, key: &str, value: &str, nth: usize) -> Option<(usize, usize)> {
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

/// Writes a problem as `file[:line[:column]][: what]: message`, the one way guild's
/// file errors read.
pub fn write_located(
    f: &mut std::fmt::Formatter<'_>,
    file: &str,
    position: (Option<usize>, Option<usize>),
    what: &str,
    message: &str,
) -> std::fmt::Result {
    write!(f, "{file}")?;
    if let (Some(line), column) = position {
        write!(f, ":{line}")?;
        if let Some(column) = column {
            write!(f, ":{column}")?;
        }
    }
    if !what.is_empty() {
        write!(f, ": {what}")?;
    }
    write!(f, ": {message}")
}

/// Writes `problems` one per line.
pub fn write_lines<T: std::fmt::Display>(
    f: &mut std::fmt::Formatter<'_>,
    problems: &[T],
) -> std::fmt::Result {
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{problem}")?;
    }
    Ok(())
}

/// Counts one more sighting of `key`, answering how many came before: the `nth` to give
/// [`locate`] for it.
pub fn bump<'a>(counts: &mut HashMap<&'a str, usize>, key: &'a str) -> usize {
    let count = counts.entry(key).or_insert(0);
    *count += 1;
    *count - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_where_it_is_set_to_its_value() {
        let toml =
            "id = \"g\"\n[[agents]]\nid = \"a\"\ntype = \"responder\"\n[[agents]]\nid = \"b\"\n";
        assert_eq!(locate(toml, "id", "b", 0), Some((6, 1)));
        assert_eq!(locate(toml, "type", "", 0), Some((4, 1)));
        let json = "{\n  \"nodes\": [\n    {\"name\": \"x\", \"needs\": {\"a\": \"y\"}}\n  ]\n}";
        assert_eq!(locate(json, "name", "x", 0), Some((3, 7)));
        assert_eq!(locate(json, "name", "z", 0), None);
    }

    #[test]
    fn positions_count_lines_and_columns_from_one() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é", 1), (1, 1));
        assert_eq!(line_column("", 10), (1, 1));
    }

    #[test]
    fn parse_problems_name_their_field_and_line() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Thing {
            count: u32,
        }
        let problem = parse::<Thing>("count = \"x\"\n", Format::Toml).unwrap_err();
        assert_eq!(problem.field, "count");
        assert_eq!(problem.position.map(|p| p.0), Some(1));
        let problem = parse::<Thing>("[1]", Format::Json).unwrap_err();
        assert!(problem.message.contains("must be a JSON object"));
        let problem = parse::<Thing>("{\"count\": 1} x", Format::Json).unwrap_err();
        assert!(problem.message.contains("trailing"), "{problem:?}");
    }
}
