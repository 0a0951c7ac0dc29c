//! The runtime store seam ([`RuntimeStore`]) and the domain types it
//! speaks: an upload (its header, then its bytes), what an install and an
//! activation answer. The gRPC edge (`service/`) converts the wire's
//! InstallRuntime stream into an [`Upload`].

use crate::config::LimitsSection;
use crate::error::Result;
use std::path::PathBuf;
use std::pin::Pin;
use tokio_stream::Stream;

/// How a runtime archive is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A gzip-compressed tar of the runtime directory.
    TarGz,
    /// A zip of the runtime directory (as the hub is shipped for some hosts).
    Zip,
    /// A `docker save` archive holding exactly one image.
    DockerImage,
}

/// What an upload announces before its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHeader {
    /// Runtime version: the directory or tag name (checked by the store).
    pub version: String,
    /// Expected SHA-256 (hex) of the whole archive.
    pub sha256: String,
    /// Exact archive size in bytes.
    pub size_bytes: u64,
    /// How it is packed; `None` when the sender named no known format.
    pub format: Option<ArchiveFormat>,
    /// Switch to this version after the install.
    pub activate: bool,
}

/// An upload's bytes after its header, or why they stopped coming.
pub type Chunks = Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>;

/// A client-streamed InstallRuntime upload: the header, then its bytes.
pub struct Upload {
    /// What the sender announced.
    pub header: RuntimeHeader,
    /// The archive's bytes as they arrive.
    pub chunks: Chunks,
}

/// Outcome of an upload.
#[derive(Debug)]
pub struct Installed {
    /// The header, validated.
    pub header: RuntimeHeader,
    /// True when this very archive was installed before.
    pub already_installed: bool,
}

/// Outcome of a switch of the active runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activated {
    /// The version active before; empty if none.
    pub previous: String,
    /// The version active now.
    pub active: String,
    /// Store-and-forward files carried into the new runtime directory.
    pub carried_store_forward: Vec<String>,
}

/// Where runtime versions are staged and which one the next start uses.
#[tonic::async_trait]
pub trait RuntimeStore: Send + Sync + 'static {
    /// Receives, verifies (size, SHA-256) and stages an upload; leaves
    /// nothing behind on failure. Never activates.
    async fn install(&self, upload: Upload, limits: LimitsSection) -> Result<Installed>;
    /// Switches the version the hub runs at its next start. The caller
    /// holds the ops lock and made sure the hub is stopped.
    async fn activate(&self, version: &str) -> Result<Activated>;
    /// The version the next start uses, if any.
    async fn active_version(&self) -> Option<String>;
    /// Every staged version, sorted.
    async fn staged_versions(&self) -> Vec<String>;
    /// What a staged version declares itself (recorded at install); None
    /// when it declares nothing or nobody knows.
    async fn declared(&self, version: &str) -> Option<crate::declared::Declared>;
    /// The directory on whose file system a staged runtime takes room:
    /// Status reports its free space as `install_root`, which the
    /// controller's preflight holds against the runtime's unpacked size.
    fn room_dir(&self) -> PathBuf;
}
