//! The wire at the gRPC edge: generated `pb` messages into the drivers'
//! domain types and back. Past `service/`, nothing sees a `pb` type.

use crate::driver::{
    ArchiveFormat, HostFiles, HubState, RuntimeHeader, StartArgs, StartMode, Upload,
};
use crate::error::{AgentError, Result};
use crate::role::Role;
use hubshift_common::pb;
use hubshift_common::pb::install_runtime_request::Item;
use hubshift_common::redact::Secret;
use tokio_stream::StreamExt;
use tonic::Streaming;

/// A Start request's arguments, checked ([`StartArgs::check`]).
pub fn start_args(req: pb::StartRequest) -> Result<StartArgs> {
    let mode = match pb::StartMode::try_from(req.mode) {
        Ok(pb::StartMode::Start) => Some(StartMode::Start),
        Ok(pb::StartMode::CreateAndStart) => Some(StartMode::CreateAndStart),
        Ok(pb::StartMode::Unspecified) | Err(_) => None,
    };
    StartArgs::check(mode, req.node, Secret::new(req.jdbc_uri))
}

/// An InstallRuntime stream as an [`Upload`]: the header it must begin
/// with, then its chunks, each message that is not one refused.
pub async fn upload(mut stream: Streaming<pb::InstallRuntimeRequest>) -> Result<Upload> {
    let first = stream
        .next()
        .await
        .ok_or_else(|| AgentError::InvalidArgument("empty stream: header expected".into()))?
        .map_err(|s| AgentError::InvalidArgument(format!("stream failed: {}", s.message())))?;
    let header = match first.item {
        Some(Item::Header(h)) => runtime_header(h),
        _ => {
            return Err(AgentError::InvalidArgument(
                "the first message must be the header".into(),
            ));
        }
    };
    let chunks = stream.map(|msg| match msg {
        Ok(pb::InstallRuntimeRequest {
            item: Some(Item::Chunk(chunk)),
        }) => Ok(chunk),
        Ok(_) => Err(AgentError::InvalidArgument(
            "only chunks may follow the header".into(),
        )),
        Err(s) => Err(AgentError::InvalidArgument(format!(
            "upload stream failed: {}",
            s.message()
        ))),
    });
    Ok(Upload {
        header,
        chunks: Box::pin(chunks),
    })
}

fn runtime_header(h: pb::RuntimeHeader) -> RuntimeHeader {
    let format = match pb::ArchiveFormat::try_from(h.format) {
        Ok(pb::ArchiveFormat::TarGz) => Some(ArchiveFormat::TarGz),
        Ok(pb::ArchiveFormat::Zip) => Some(ArchiveFormat::Zip),
        Ok(pb::ArchiveFormat::DockerImage) => Some(ArchiveFormat::DockerImage),
        Ok(pb::ArchiveFormat::Unspecified) | Err(_) => None,
    };
    RuntimeHeader {
        version: h.version,
        sha256: h.sha256,
        size_bytes: h.size_bytes,
        format,
        activate: h.activate,
    }
}

/// The hub's state on the wire.
pub fn hub_state(state: HubState) -> pb::HubState {
    match state {
        HubState::Stopped => pb::HubState::Stopped,
        HubState::Starting => pb::HubState::Starting,
        HubState::Running => pb::HubState::Running,
        HubState::Exited => pb::HubState::Exited,
    }
}

/// The hub's role on the wire.
pub fn hub_role(role: Role) -> pb::HubRole {
    match role {
        Role::Unknown => pb::HubRole::Unknown,
        Role::Active => pb::HubRole::Active,
        Role::Standby => pb::HubRole::Standby,
    }
}

/// The settings check as Status reports it.
pub fn hub_settings(files: &HostFiles) -> pb::HubSettings {
    let file = files.settings_file.display().to_string();
    match &files.settings {
        Ok(b) => pb::HubSettings {
            file,
            problem: String::new(),
            app_data: b.app_data.display().to_string(),
            store_forward_dir: b.store_forward_dir.display().to_string(),
            store_forward_in_runtime: b.store_forward_in_runtime,
        },
        Err(e) => pb::HubSettings {
            file,
            problem: e.to_string(),
            ..pb::HubSettings::default()
        },
    }
}

/// One piece of a backup file on the wire; a read error ends the stream
/// as INTERNAL.
pub fn backup_chunk(
    piece: std::io::Result<Vec<u8>>,
) -> std::result::Result<pb::Chunk, tonic::Status> {
    piece
        .map(|data| pb::Chunk { data })
        .map_err(|e| tonic::Status::internal(format!("cannot read the backup: {e}")))
}

/// A written (or found) backup on the wire, with its base when a delta.
pub fn backup_made(made: crate::precopy::Made) -> pb::BackupResponse {
    let base = made.base.unwrap_or(crate::precopy::pair::Manifest {
        format: 0,
        base_id: String::new(),
        base_sha256: String::new(),
        base_size: 0,
    });
    pb::BackupResponse {
        id: made.info.id,
        size_bytes: made.info.size,
        sha256: made.info.sha256,
        path: made.info.path.display().to_string(),
        existed: made.info.existed,
        base_id: base.base_id,
        base_sha256: base.base_sha256,
        base_size_bytes: base.base_size,
        full_because: made.full_because,
        write_ms: made.write_ms,
    }
}
