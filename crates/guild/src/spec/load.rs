//! Loading guild specs from TOML or JSON files, and checking them against what is
//! registered, with errors that name the file, the line and the field.

use std::fmt;
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
        let field = if self.field == "." { "" } else { &self.field };
        spec_file::write_located(
            f,
            &self.file,
            (self.line, self.column),
            field,
            &self.message,
        )
    }
}

/// Every problem found in a spec file, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        spec_file::write_lines(f, &self.0)
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
pub const MAX_SPEC_BYTES: u64 = spec_file::MAX_FILE_BYTES;

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
pub use spec_file::Format as SpecFormat;

impl LoadedSpec {
    /// Reads and parses the file at `path`; its extension picks the format.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SpecErrors> {
        let path = path.as_ref();
        let (source, format) = spec_file::read(path)
            .map_err(|problem| errors(&path.display().to_string(), problem))?;
        let mut loaded = Self::parse(path, source, format)?;
        if let Some(dir) = std::path::absolute(path)
            .ok()
            .and_then(|path| path.parent().map(Path::to_owned))
        {
            programs_run_beside(&mut loaded.spec, &dir);
        }
        Ok(loaded)
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
        match spec_file::parse(&source, format) {
            Ok(spec) => Ok(Self { file, source, spec }),
            Err(problem) => Err(errors(&file.display().to_string(), problem)),
        }
    }
}

/// A problem `spec_file` found, as the one error of a spec file.
fn errors(file: &str, problem: spec_file::Problem) -> SpecErrors {
    let (line, column) = problem.position.unzip();
    SpecErrors(vec![SpecError {
        file: file.to_owned(),
        line,
        column,
        field: problem.field,
        message: problem.message,
    }])
}

/// Makes the programs of `exec` agents run in the spec file's directory `dir` (their
/// `cwd`, when not set, or relative to it), so a spec's program paths are relative to
/// the spec wherever it is run from.
fn programs_run_beside(spec: &mut GuildSpec, dir: &Path) {
    for agent in spec
        .agents
        .iter_mut()
        .filter(|agent| agent.agent_type == "exec")
    {
        let Some(properties) = agent.properties.as_object_mut() else {
            continue;
        };
        let cwd = match properties.get("cwd") {
            None => dir.to_owned(),
            Some(serde_json::Value::String(cwd)) if Path::new(cwd).is_relative() => dir.join(cwd),
            // Absolute, or not a text (which the agent's checks refuse).
            Some(_) => continue,
        };
        properties.insert(
            "cwd".into(),
            serde_json::Value::String(cwd.display().to_string()),
        );
    }
}
