//! Why a configuration file cannot be used; every message names the file
//! and, for a bad value, the key.

use std::path::PathBuf;
use thiserror::Error;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the key).
    #[error("config file {file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// toml's message (line, column, key).
        message: String,
    },
    /// One key holds a value that cannot be used.
    #[error("config file {file}: key `{key}`: {reason}")]
    Key {
        /// The file.
        file: PathBuf,
        /// Dotted key, e.g. `tls.cert`.
        key: String,
        /// Why.
        reason: String,
    },
}
