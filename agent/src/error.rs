//! The agent's one error type, and its one mapping to gRPC status codes.

use hubshift_common::archive::ArchiveError;
use hubshift_common::names::NameError;
use hubshift_common::redact::redact;
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
    /// Another request is doing the same thing now (the same runtime
    /// version being installed); retrying later gets a clear answer.
    #[error("{0}")]
    Aborted(String),
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

    /// A hostile or broken archive sent by the caller, unpacked into
    /// `dest`. An I/O error that carries an OS cause (no space, read-only
    /// file system …) is the host's, not the archive's: it keeps its cause.
    pub fn archive(dest: &Path) -> impl FnOnce(ArchiveError) -> AgentError {
        let dest = dest.to_path_buf();
        move |err| match err {
            ArchiveError::Io(e) if is_host_fault(&e) => AgentError::Io {
                what: "cannot unpack into",
                path: dest,
                source: e,
            },
            ArchiveError::Io(e) => AgentError::InvalidArgument(format!("bad archive: {e}")),
            other => AgentError::InvalidArgument(other.to_string()),
        }
    }

    /// The gRPC code and the message the caller reads. Messages go through
    /// [`redact`]: no error text may carry a password, whatever wrote it.
    pub fn code_and_message(&self) -> (tonic::Code, String) {
        use tonic::Code;
        let (code, message) = match self {
            AgentError::InvalidArgument(m) => (Code::InvalidArgument, m.clone()),
            AgentError::NotFound(m) => (Code::NotFound, m.clone()),
            AgentError::FailedPrecondition(m) => (Code::FailedPrecondition, m.clone()),
            AgentError::AlreadyExists(m) => (Code::AlreadyExists, m.clone()),
            AgentError::PermissionDenied(m) => (Code::PermissionDenied, m.clone()),
            AgentError::ResourceExhausted(m) => (Code::ResourceExhausted, m.clone()),
            AgentError::DeadlineExceeded(m) => (Code::DeadlineExceeded, m.clone()),
            AgentError::Unavailable(m) => (Code::Unavailable, m.clone()),
            AgentError::Aborted(m) => (Code::Aborted, m.clone()),
            AgentError::Io { what, path, source } => (
                io_code(source),
                format!("{what} {}: {}", path.display(), io_cause(source)),
            ),
            AgentError::Internal(m) => (Code::Internal, m.clone()),
        };
        (code, redact(&message))
    }

    /// The same error again, for a second caller waiting on one operation
    /// (two Stops sharing one stop).
    pub fn duplicate(&self) -> AgentError {
        match self {
            AgentError::Io { what, path, source } => AgentError::Io {
                what,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(errno) => std::io::Error::from_raw_os_error(errno),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            AgentError::InvalidArgument(m) => AgentError::InvalidArgument(m.clone()),
            AgentError::NotFound(m) => AgentError::NotFound(m.clone()),
            AgentError::FailedPrecondition(m) => AgentError::FailedPrecondition(m.clone()),
            AgentError::AlreadyExists(m) => AgentError::AlreadyExists(m.clone()),
            AgentError::PermissionDenied(m) => AgentError::PermissionDenied(m.clone()),
            AgentError::ResourceExhausted(m) => AgentError::ResourceExhausted(m.clone()),
            AgentError::DeadlineExceeded(m) => AgentError::DeadlineExceeded(m.clone()),
            AgentError::Unavailable(m) => AgentError::Unavailable(m.clone()),
            AgentError::Aborted(m) => AgentError::Aborted(m.clone()),
            AgentError::Internal(m) => AgentError::Internal(m.clone()),
        }
    }
}

/// The errno behind an I/O error, also when a library wrapped it (tar,
/// tempfile) and kept only its kind on the outside.
fn errno(e: &std::io::Error) -> Option<i32> {
    if let Some(n) = e.raw_os_error() {
        return Some(n);
    }
    let mut inner: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(err) = inner {
        if let Some(n) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(n);
        }
        inner = err.source();
    }
    None
}

/// The host's own fault (no space, no permission, read-only …), as
/// opposed to bad bytes sent by the caller.
pub fn is_host_fault(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    errno(e).is_some()
        || matches!(
            e.kind(),
            K::StorageFull | K::QuotaExceeded | K::PermissionDenied | K::ReadOnlyFilesystem
        )
}

/// The gRPC code of a failed file operation, by its OS cause:
/// RESOURCE_EXHAUSTED for no space or quota left (ENOSPC, EDQUOT),
/// FAILED_PRECONDITION for what an operator must fix on the host before a
/// retry can work (EACCES, EPERM, EROFS: PERMISSION_DENIED stays the
/// answer to a caller that is not on the allow-list), INTERNAL otherwise.
pub fn io_code(e: &std::io::Error) -> tonic::Code {
    use std::io::ErrorKind as K;
    use tonic::Code;
    match errno(e) {
        Some(libc::ENOSPC | libc::EDQUOT) => Code::ResourceExhausted,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => Code::FailedPrecondition,
        Some(_) => Code::Internal,
        None => match e.kind() {
            K::StorageFull | K::QuotaExceeded => Code::ResourceExhausted,
            K::PermissionDenied | K::ReadOnlyFilesystem => Code::FailedPrecondition,
            _ => Code::Internal,
        },
    }
}

/// The cause as the operator reads it: the OS text ("No space left on
/// device (os error 28)"), with the library's wrapping when it adds one.
fn io_cause(e: &std::io::Error) -> String {
    let mut text = e.to_string();
    let mut inner = std::error::Error::source(e);
    while let Some(s) = inner {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        inner = s.source();
    }
    text
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
        // The operator reads what the log says: the operation, the path and
        // the OS cause (the cause was once only in the agent's log).
        let (code, message) = err.code_and_message();
        if code == Code::Internal {
            tracing::error!(error = %message, "request failed");
        } else {
            tracing::warn!(code = ?code, error = %message, "request refused");
        }
        Status::new(code, message)
    }
}

/// Result of agent operations.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use tonic::Code;

    fn status_of(source: io::Error) -> tonic::Status {
        let path = Path::new("/var/lib/hubshift-agent/backups/b1.tar.gz");
        AgentError::io("cannot archive appdata into", path)(source).into()
    }

    #[test]
    fn the_os_cause_and_the_path_reach_the_caller_with_a_fitting_code() {
        let cases = [
            (
                io::Error::from_raw_os_error(libc::ENOSPC),
                Code::ResourceExhausted,
                "No space left",
            ),
            (
                io::Error::from_raw_os_error(libc::EDQUOT),
                Code::ResourceExhausted,
                "quota",
            ),
            (
                io::Error::from(io::ErrorKind::StorageFull),
                Code::ResourceExhausted,
                "no storage space",
            ),
            (
                io::Error::from_raw_os_error(libc::EACCES),
                Code::FailedPrecondition,
                "Permission denied",
            ),
            (
                io::Error::from_raw_os_error(libc::EPERM),
                Code::FailedPrecondition,
                "not permitted",
            ),
            (
                io::Error::from_raw_os_error(libc::EROFS),
                Code::FailedPrecondition,
                "Read-only file system",
            ),
            (
                io::Error::from_raw_os_error(libc::EIO),
                Code::Internal,
                "Input/output error",
            ),
        ];
        for (source, code, text) in cases {
            let s = status_of(source);
            assert_eq!(s.code(), code, "{s:?}");
            assert!(s.message().contains(text), "{s:?}");
            assert!(
                s.message()
                    .contains("/var/lib/hubshift-agent/backups/b1.tar.gz"),
                "{s:?}"
            );
        }
    }

    /// tar and tempfile wrap the OS error and keep only its kind outside;
    /// the errno is still found inside.
    #[test]
    fn a_wrapped_os_error_keeps_its_code() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "failed to unpack `x`")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = io::Error::other(Wrapper(io::Error::from_raw_os_error(libc::EDQUOT)));
        let s = status_of(wrapped);
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert!(s.message().contains("failed to unpack `x`"), "{s:?}");
        assert!(s.message().contains("quota"), "{s:?}");
    }

    #[test]
    fn no_error_text_carries_a_password() {
        let uri = "jdbc:postgresql://hub:s3cret-pw@db:5432/hub?password=s3cret-pw";
        let io_text = io::Error::other(format!("cannot connect to {uri}"));
        for err in [
            AgentError::io("cannot write", Path::new("/x"))(io_text),
            AgentError::Internal(format!("create failed: {uri}")),
            AgentError::FailedPrecondition(format!("output: {uri}")),
        ] {
            let (_, message) = err.code_and_message();
            assert!(!message.contains("s3cret-pw"), "{message}");
        }
    }

    #[test]
    fn internal_errors_say_what_failed() {
        let s: tonic::Status =
            AgentError::Internal("hub process group 7 survived SIGKILL".into()).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().contains("survived SIGKILL"), "{s:?}");
    }

    #[test]
    fn archive_errors_with_an_os_cause_are_the_hosts() {
        let dest = Path::new("/opt/highbyte/runtimes/.staging");
        let full =
            AgentError::archive(dest)(ArchiveError::Io(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(full.code_and_message().0, Code::ResourceExhausted, "{full}");
        let bad = AgentError::archive(dest)(ArchiveError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid gzip header",
        )));
        assert_eq!(bad.code_and_message().0, Code::InvalidArgument, "{bad}");
    }
}
