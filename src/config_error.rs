//! The one error type of configuration: every message names the field path
//! (`registries[1].ecr.region`), the offending value and the fix, because the reader is an
//! operator looking at a crash-looping pod, not at the code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}; fix: check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {problem}; fix: {fix}")]
    Invalid {
        field: String,
        problem: String,
        fix: String,
    },
}

impl ConfigError {
    pub fn invalid(field: &str, problem: &str, fix: &str) -> Self {
        Self::Invalid {
            field: field.to_string(),
            problem: problem.to_string(),
            fix: fix.to_string(),
        }
    }
}

/// What every check returns: the value it vouches for, or the first problem found.
pub(crate) type Checked<T> = Result<T, ConfigError>;
