//! Runtimes as images: an InstallRuntime upload of a `docker save` archive
//! is received into a private file, checked (size, SHA-256, exactly one
//! image) before the engine sees a byte, loaded, and tagged
//! `<image_repository>:<version>`. The active version is a file in the
//! state directory: the image the container runs at its next start.

use super::{engine_error, is_not_found};
use crate::config::{Config, DockerSection, LimitsSection};
use crate::declared::Declared;
use crate::driver::{
    Activated, ArchiveFormat, Chunks, Installed, RuntimeHeader, RuntimeStore, Upload,
};
use crate::error::{AgentError, Result};
use crate::fsutil;
use bollard::Docker;
use bollard::query_parameters::{
    ImportImageOptionsBuilder, ListImagesOptionsBuilder, TagImageOptionsBuilder,
};
use hubshift_common::digest::StreamDigest;
use hubshift_common::names::validate_name;
use prost::bytes::Bytes;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_stream::StreamExt;

/// Images of one repository on one engine.
pub struct ImageStore {
    cfg: Arc<Config>,
    d: DockerSection,
    engine: Docker,
    /// Where the engine keeps its images (see [`data_root`]).
    data_root: PathBuf,
}

impl ImageStore {
    /// The store of `d.image_repository`; loaded images take room under
    /// `data_root`.
    pub fn new(
        cfg: Arc<Config>,
        d: DockerSection,
        engine: Docker,
        data_root: PathBuf,
    ) -> ImageStore {
        ImageStore {
            cfg,
            d,
            engine,
            data_root,
        }
    }

    /// `<repository>:<version>`
    pub fn image_ref(&self, version: &str) -> String {
        format!("{}:{version}", self.d.image_repository)
    }

    fn active_file(&self) -> PathBuf {
        self.cfg.paths.state_dir.join("docker-active-version")
    }

    fn archive_record(&self, version: &str) -> PathBuf {
        self.cfg
            .paths
            .state_dir
            .join("runtime-archives")
            .join(format!("{version}.sha256"))
    }

    fn write_record(&self, version: &str, sha: &str) -> Result<()> {
        let record = self.archive_record(version);
        if let Some(dir) = record.parent() {
            fsutil::ensure_dir(dir, 0o700)?;
        }
        fsutil::write_atomic(&record, format!("{sha}\n").as_bytes(), 0o600)
    }

    /// Id of the image tagged with `version`, if any.
    async fn image_id(&self, version: &str) -> Result<Option<String>> {
        match self.engine.inspect_image(&self.image_ref(version)).await {
            Ok(i) => Ok(i.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_error("cannot inspect image")(e)),
        }
    }

    async fn image_exists(&self, version: &str) -> Result<bool> {
        match self.engine.inspect_image(&self.image_ref(version)).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(engine_error("cannot inspect image")(e)),
        }
    }

    /// The active version, which must be loaded, for a start.
    pub async fn active_version_checked(&self) -> Result<String> {
        let version = std::fs::read_to_string(self.active_file())
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        if version.is_empty() {
            return Err(AgentError::FailedPrecondition(
                "no active runtime: install and activate an image first".into(),
            ));
        }
        if !self.image_exists(&version).await? {
            return Err(AgentError::FailedPrecondition(format!(
                "the active runtime's image {} is not on this engine (removed?): install it again",
                self.image_ref(&version)
            )));
        }
        Ok(version)
    }

    /// Receives the upload into a private temp file; returns it with the
    /// bytes' SHA-256 and size.
    async fn receive(
        &self,
        chunks: &mut Chunks,
        header: &RuntimeHeader,
        limits: LimitsSection,
    ) -> Result<(tempfile::NamedTempFile, String, u64)> {
        let staging = self.cfg.paths.state_dir.join("staging");
        fsutil::ensure_dir(&staging, 0o700)?;
        let tmp = crate::scratch::file_in(&staging, "image")?;
        let mut file = tmp
            .reopen()
            .map_err(AgentError::io("cannot open", tmp.path()))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let path = tmp.path().to_path_buf();
        let writer = tokio::task::spawn_blocking(move || -> Result<(String, u64)> {
            let mut digest = StreamDigest::new();
            while let Some(chunk) = rx.blocking_recv() {
                digest.update(&chunk);
                file.write_all(&chunk)
                    .map_err(AgentError::io("cannot write", &path))?;
            }
            let size = digest.size();
            Ok((digest.finish(), size))
        });
        let failure = crate::driver::upload::receive_chunks(chunks, &tx, header, &limits).await;
        drop(tx);
        let (sha, size) = writer.await??;
        if let Some(f) = failure {
            return Err(f);
        }
        Ok((tmp, sha, size))
    }

    /// Streams the checked archive into the engine (`docker load`).
    async fn load(&self, file: &Path) -> Result<()> {
        let mut reader = std::fs::File::open(file).map_err(AgentError::io("cannot open", file))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let feeder = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let body = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut progress = self.engine.import_image_stream(
            ImportImageOptionsBuilder::default().quiet(true).build(),
            body,
            None,
        );
        let mut result = Ok(());
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                result = Err(match e {
                    bollard::errors::Error::DockerStreamError { error } => {
                        AgentError::InvalidArgument(format!(
                            "the engine refused the image: {error}"
                        ))
                    }
                    other => engine_error("cannot load the image")(other),
                });
                break;
            }
        }
        drop(progress);
        let _ = feeder.await;
        result
    }
}

/// The one image of a `docker save` archive: its id (`sha256:…`), read
/// from manifest.json, and the version its labels declare (see
/// [`crate::declared::IMAGE_LABELS`]). Refuses archives with more or fewer
/// images, or more entries than allowed.
pub fn single_image(archive: &Path, max_entries: u64) -> Result<(String, Option<Declared>)> {
    let file = std::fs::File::open(archive).map_err(AgentError::io("cannot open", archive))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let entries = tar.entries().map_err(|e| {
        AgentError::InvalidArgument(format!("not a docker save archive (tar): {e}"))
    })?;
    let mut manifest = None;
    // Small entries that may be the image's config (read once, in one pass).
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut small_bytes = 0u64;
    let mut count = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            AgentError::InvalidArgument(format!("not a docker save archive (tar): {e}"))
        })?;
        count += 1;
        if count > max_entries {
            return Err(AgentError::InvalidArgument(format!(
                "image archive has more than {max_entries} entries (limits.max_archive_entries)"
            )));
        }
        let is_manifest = entry
            .path()
            .map(|p| p.as_os_str() == "manifest.json")
            .unwrap_or(false);
        if is_manifest {
            if entry.size() > 16 * 1024 * 1024 {
                return Err(AgentError::InvalidArgument(
                    "manifest.json is too large".into(),
                ));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| AgentError::InvalidArgument(format!("manifest.json: {e}")))?;
            manifest = Some(text);
        } else if entry.size() <= 1024 * 1024 && small_bytes + entry.size() <= 16 * 1024 * 1024 {
            let name = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".json") || name.starts_with("blobs/") {
                let mut bytes = Vec::new();
                if entry.read_to_end(&mut bytes).is_ok() {
                    small_bytes += bytes.len() as u64;
                    small.insert(name, bytes);
                }
            }
        }
    }
    let text = manifest.ok_or_else(|| {
        AgentError::InvalidArgument("not a docker save archive: no manifest.json".into())
    })?;
    let images: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| AgentError::InvalidArgument(format!("manifest.json: {e}")))?;
    if images.len() != 1 {
        return Err(AgentError::InvalidArgument(format!(
            "the image archive holds {} images; exactly one is accepted",
            images.len()
        )));
    }
    let config = images[0]
        .get("Config")
        .and_then(|c| c.as_str())
        .ok_or_else(|| AgentError::InvalidArgument("manifest.json: no Config".into()))?;
    // `<hex>.json` (docker 20.10) or `blobs/sha256/<hex>` (OCI layout).
    let name = config.rsplit('/').next().unwrap_or(config);
    let hex = name.strip_suffix(".json").unwrap_or(name);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AgentError::InvalidArgument(format!(
            "manifest.json: unexpected Config {config:?}"
        )));
    }
    let declared = small
        .get(config)
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(bytes).ok())
        .and_then(|c| {
            let labels = c.get("config")?.get("Labels")?.clone();
            crate::declared::from_labels(|k| labels.get(k).and_then(|v| v.as_str()))
        });
    Ok((format!("sha256:{}", hex.to_ascii_lowercase()), declared))
}

fn check_header(h: &mut RuntimeHeader, limits: &LimitsSection) -> Result<()> {
    crate::driver::upload::check_header_fields(h, limits)?;
    if h.format != Some(ArchiveFormat::DockerImage) {
        return Err(AgentError::InvalidArgument(
            "this agent runs the hub in a container: the runtime must be a `docker save` archive (format DOCKER_IMAGE)".into(),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl RuntimeStore for ImageStore {
    async fn install(&self, upload: Upload, limits: LimitsSection) -> Result<Installed> {
        let Upload {
            mut header,
            mut chunks,
        } = upload;
        check_header(&mut header, &limits)?;
        let version = header.version.clone();
        // One install per tag, so the check for an existing tag sees the
        // previous install; a second one is told so at once.
        let _claim = crate::driver::upload::claim_install(&self.image_ref(&version), &version)?;
        let existing = self.image_id(&version).await?;
        if existing.is_some() {
            let recorded =
                std::fs::read_to_string(self.archive_record(&version)).unwrap_or_default();
            if recorded.trim() == header.sha256 {
                return Ok(Installed {
                    header,
                    already_installed: true,
                });
            }
        }
        let started = std::time::Instant::now();
        let (tmp, sha, size) = self.receive(&mut chunks, &header, limits).await?;
        crate::driver::upload::check_received(&header, size, &sha)?;
        let path = tmp.path().to_path_buf();
        let max_entries = limits.max_archive_entries;
        let (id, declared) =
            tokio::task::spawn_blocking(move || single_image(&path, max_entries)).await??;
        let reference = self.image_ref(&version);
        // The tag exists: the same image (loaded by hand, or by another
        // agent on this engine) is this archive; another one is a conflict,
        // whatever it declares.
        if let Some(existing) = &existing
            && *existing != id
        {
            return Err(AgentError::AlreadyExists(format!(
                "image {reference} is already loaded from a different archive (image {existing})"
            )));
        }
        // Loaded only as the version it says it is.
        let declared = crate::declared::check(&version, declared.as_slice())?;
        if existing.is_some() {
            self.write_record(&version, &sha)?;
            crate::declared::write_record(&self.cfg.paths.state_dir, &version, declared.as_ref())?;
            return Ok(Installed {
                header,
                already_installed: true,
            });
        }
        self.load(tmp.path()).await?;
        drop(tmp);
        self.engine
            .tag_image(
                &id,
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(&self.d.image_repository)
                        .tag(&version)
                        .build(),
                ),
            )
            .await
            .map_err(engine_error("cannot tag the loaded image"))?;
        self.write_record(&version, &sha)?;
        crate::declared::write_record(&self.cfg.paths.state_dir, &version, declared.as_ref())?;
        tracing::info!(
            version = %version,
            image = %reference,
            id = %id,
            sha256 = %sha,
            bytes = size,
            total_ms = started.elapsed().as_millis() as u64,
            "runtime image loaded"
        );
        Ok(Installed {
            header,
            already_installed: false,
        })
    }

    async fn activate(&self, version: &str) -> Result<Activated> {
        validate_name("runtime version", version)?;
        if !self.image_exists(version).await? {
            return Err(AgentError::NotFound(format!(
                "runtime {version} is not staged (no image {})",
                self.image_ref(version)
            )));
        }
        let previous = std::fs::read_to_string(self.active_file())
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        fsutil::ensure_dir(&self.cfg.paths.state_dir, 0o700)?;
        fsutil::write_atomic(
            &self.active_file(),
            format!("{version}\n").as_bytes(),
            0o644,
        )?;
        tracing::info!(previous = %previous, active = %version, "runtime image activated for the next start");
        Ok(Activated {
            previous,
            active: version.to_string(),
            ..Activated::default()
        })
    }

    async fn active_version(&self) -> Option<String> {
        let version = std::fs::read_to_string(self.active_file()).ok()?;
        let version = version.trim().to_string();
        (!version.is_empty()).then_some(version)
    }

    async fn staged_versions(&self) -> Vec<String> {
        let filters = HashMap::from([("reference", vec![self.d.image_repository.as_str()])]);
        let listed = self
            .engine
            .list_images(Some(
                ListImagesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await;
        let prefix = format!("{}:", self.d.image_repository);
        let mut out: Vec<String> = match listed {
            Ok(images) => images
                .iter()
                .flat_map(|i| i.repo_tags.iter())
                .filter_map(|t| t.strip_prefix(&prefix))
                .filter(|v| validate_name("runtime version", v).is_ok())
                .map(str::to_string)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list images");
                Vec::new()
            }
        };
        out.sort();
        out.dedup();
        out
    }

    async fn declared(&self, version: &str) -> Option<crate::declared::Declared> {
        crate::declared::read_record(&self.cfg.paths.state_dir, version).flatten()
    }

    fn room_dir(&self) -> PathBuf {
        self.data_root.clone()
    }
}

/// The directory where the engine keeps images (`DockerRootDir` of its
/// info: `/var/lib/docker`, a rootless engine's or Podman's storage), where
/// a loaded image takes room; `fallback` when the engine does not say, or
/// names a directory this host does not show (an engine in a VM), since
/// its free space could not be measured here.
pub async fn data_root(engine: &Docker, fallback: &Path) -> PathBuf {
    let reported = match engine.info().await {
        Ok(info) => info.docker_root_dir.filter(|d| !d.is_empty()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the engine's info");
            None
        }
    };
    match reported.map(PathBuf::from) {
        Some(dir) if dir.is_dir() => dir,
        Some(dir) => {
            tracing::warn!(
                data_root = %dir.display(),
                "the engine's data root is not a directory on this host: free space for images is not known here"
            );
            fallback.to_path_buf()
        }
        None => fallback.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &str)]) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&b.into_inner().unwrap()).unwrap();
        f
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_image_declares_its_version_by_a_label() {
        let manifest = format!(r#"[{{"Config":"{HEX}.json"}}]"#);
        let config = r#"{"config":{"Labels":{"hubsim.version":"4.1.0"}}}"#;
        let f = archive(&[
            ("manifest.json", &manifest),
            (&format!("{HEX}.json"), config),
        ]);
        let (_, declared) = single_image(f.path(), 10).unwrap();
        let declared = declared.unwrap();
        assert_eq!(declared.version, "4.1.0");
        let err = crate::declared::check("4.2.0", &[declared]).unwrap_err();
        assert!(err.to_string().contains("4.1.0"), "{err}");
        let bare = archive(&[("manifest.json", &manifest), (&format!("{HEX}.json"), "{}")]);
        assert_eq!(single_image(bare.path(), 10).unwrap().1, None);
    }

    #[test]
    fn an_image_archive_must_hold_exactly_one_image() {
        let one =
            format!(r#"[{{"Config":"{HEX}.json","RepoTags":null,"Layers":["l/layer.tar"]}}]"#);
        let f = archive(&[("manifest.json", &one), ("l/layer.tar", "x")]);
        assert_eq!(
            single_image(f.path(), 10).unwrap().0,
            format!("sha256:{HEX}")
        );
        let oci = format!(r#"[{{"Config":"blobs/sha256/{HEX}"}}]"#);
        let f = archive(&[("manifest.json", &oci)]);
        assert_eq!(
            single_image(f.path(), 10).unwrap().0,
            format!("sha256:{HEX}")
        );

        let two = format!(r#"[{{"Config":"{HEX}.json"}},{{"Config":"{HEX}.json"}}]"#);
        let cases = [
            (archive(&[("manifest.json", &two)]), "2 images"),
            (archive(&[("manifest.json", "[]")]), "0 images"),
            (archive(&[("VERSION", "1")]), "no manifest.json"),
            (
                archive(&[("manifest.json", r#"[{"Config":"../../x"}]"#)]),
                "unexpected Config",
            ),
            (
                archive(&[("a", ""), ("b", ""), ("manifest.json", &one)]),
                "more than 2 entries",
            ),
        ];
        for (f, why) in cases {
            let err = single_image(f.path(), 2).unwrap_err();
            assert!(
                matches!(err, AgentError::InvalidArgument(_)),
                "{why}: {err}"
            );
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
        let mut garbage = tempfile::NamedTempFile::new().unwrap();
        garbage.write_all(&[7u8; 1000]).unwrap();
        assert!(single_image(garbage.path(), 10).is_err());
    }
}
