//! The agent's one error type, and its one mapping to gRPC status codes.

use hubshift_common::archive::ArchiveError;
use hubshift_common::names::NameError;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The request itself is wrong (bad name, bad checksum, hostile archive).
    #[error("{0}")]
    InvalidArgument(String),
    /// The named backup, runtime or file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but not now (e.g. "hub is running").
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something with that name exists and differs.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller is not on the allow-list.
    #[error("{0}")]
    PermissionDenied(String),
    /// Too many such requests at once; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller stopped sending in the middle of a stream.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A file operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done ("cannot write").
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A service the agent depends on (the Docker Engine) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else that is the agent's fault.
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    /// An I/O error on `path`.
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.to_path_buf();
        move |source| AgentError::Io { what, path, source }
    }

    /// A hostile or broken archive sent by the caller.
    pub fn archive(err: ArchiveError) -> AgentError {
        match err {
            ArchiveError::Io(e) => AgentError::InvalidArgument(format!("bad archive: {e}")),
            other => AgentError::InvalidArgument(other.to_string()),
        }
    }
}

impl From<NameError> for AgentError {
    fn from(e: NameError) -> Self {
        AgentError::InvalidArgument(e.to_string())
    }
}

impl From<tokio::task::JoinError> for AgentError {
    fn from(e: tokio::task::JoinError) -> Self {
        AgentError::Internal(format!("worker task failed: {e}"))
    }
}

impl From<AgentError> for tonic::Status {
    fn from(err: AgentError) -> Self {
        use tonic::{Code, Status};
        let (code, message) = match &err {
            AgentError::InvalidArgument(m) => (Code::InvalidArgument, m.clone()),
            AgentError::NotFound(m) => (Code::NotFound, m.clone()),
            AgentError::FailedPrecondition(m) => (Code::FailedPrecondition, m.clone()),
            AgentError::AlreadyExists(m) => (Code::AlreadyExists, m.clone()),
            AgentError::PermissionDenied(m) => (Code::PermissionDenied, m.clone()),
            AgentError::ResourceExhausted(m) => (Code::ResourceExhausted, m.clone()),
            AgentError::DeadlineExceeded(m) => (Code::DeadlineExceeded, m.clone()),
            AgentError::Unavailable(m) => (Code::Unavailable, m.clone()),
            AgentError::Io { what, path, .. } => {
                (Code::Internal, format!("{what} {}", path.display()))
            }
            AgentError::Internal(_) => (Code::Internal, "internal agent error".to_string()),
        };
        // The whole chain stays on the server; the client gets the short form.
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        if code == Code::Internal {
            tracing::error!(error = %chain, "request failed");
        } else {
            tracing::warn!(code = ?code, error = %chain, "request refused");
        }
        Status::new(code, message)
    }
}

/// Result of agent operations.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
