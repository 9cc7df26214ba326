//! The error type of workflow functions.

use crate::{AgentError, tools::ToolError};
use std::fmt;

/// Why a workflow (or one of its steps) failed.
///
/// It is what [`workflow!`](crate::workflow) main functions and [`pipeline`](crate::pipeline)
/// stages return, and what the SDK's own combinators fail with. `?` converts
/// [`AgentError`], [`ToolError`], `serde_json::Error`, `String` and `&str` into it, so a workflow
/// can propagate any failure; its [`Display`](fmt::Display) text becomes the run's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with what was being done, as in `reading src/main.rs: not-found: ...`.
    #[must_use]
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self {
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<AgentError> for Error {
    fn from(error: AgentError) -> Self {
        Self::new(format!("agent call failed: {error}"))
    }
}

impl From<ToolError> for Error {
    fn from(error: ToolError) -> Self {
        Self::new(format!("tool call failed: {error}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::new(format!("json: {error}"))
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}
