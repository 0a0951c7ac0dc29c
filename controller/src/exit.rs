//! Exit codes CI pipelines branch on, and the error kinds that select them.

use std::fmt;

/// Documented exit codes (0 is success, returned by `main` directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A step failed; the state is consistent and the next actions are printed.
    Failed = 1,
    /// Usage or configuration error; nothing was changed.
    Usage = 2,
    /// Refused: preflight failed or the group's lock is held; nothing was changed.
    Refused = 3,
    /// Parked on purpose (`--pause-before`, `hubshift stop`, Ctrl-C) at a safe
    /// point: the group serves; `hubshift resume` continues.
    Parked = 4,
}

/// An error that selects exit code 2: bad flags, bad inventory, bad files.
#[derive(Debug)]
pub struct UsageError(pub String);

/// An error that selects exit code 3: preflight findings or a held lock.
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
impl std::error::Error for Refused {}

/// A run parked on purpose (`--pause-before`, `hubshift stop`, Ctrl-C):
/// the group has an active node, nothing is half done, `resume` continues.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Parked {
    /// Why it parked.
    pub kind: ParkKind,
    /// What to tell the operator.
    pub message: String,
}

/// Why a run or a fleet parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkKind {
    /// Before a step named by `--pause-before`.
    Paused,
    /// At a safe point, because `hubshift stop` or Ctrl-C asked.
    Stopped,
    /// Before it began, outside its maintenance window.
    Window,
}

/// Refused (exit 3) because another controller holds the group's lock: a
/// fleet reports such a group as taken and goes on.
#[derive(Debug, thiserror::Error)]
#[error("group {group} is locked by {holder}")]
pub struct Taken {
    /// The group.
    pub group: String,
    /// "run <id> (started …)" or "another hubshift controller".
    pub holder: String,
}

/// The exit code an error chain asks for: the first typed marker wins,
/// anything else is a failure.
pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return Exit::Usage;
        }
        if cause.is::<Refused>() || cause.is::<Taken>() {
            return Exit::Refused;
        }
        if cause.is::<Parked>() {
            return Exit::Parked;
        }
    }
    Exit::Failed
}
