//! What the hubshift agent and controller both speak, and nothing either side
//! runs alone: the generated gRPC contract, TLS setup, safe archive handling,
//! digests, name validation, secret redaction, one-line error text and a
//! file system's free space.

pub mod archive;
pub mod clock;
pub mod declared;
pub mod digest;
pub mod disk;
pub mod error_text;
#[cfg(feature = "exposition")]
pub mod exposition;
pub mod names;
pub mod pgzip;
#[cfg(feature = "pki")]
pub mod pki;
pub mod redact;
pub mod tls;

/// Generated code of `proto/hubshift/agent/v1/agent.proto`, the one wire contract.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("hubshift.agent.v1");
}

/// Chunk size for every stream: well below tonic's 4 MiB message limit, big
/// enough to keep per-message overhead small.
pub const CHUNK_SIZE: usize = 512 * 1024;

/// Version of the hubshift binaries, reported by the agent's Status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
