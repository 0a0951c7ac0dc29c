//! Store-and-forward files in the container's writable layer. With
//! `directories.storeForwardData` unset the hub keeps them in its runtime
//! directory, which in a container is part of the image: recreating the
//! container from the next version's image would drop the data the hub
//! buffered but had not forwarded yet. So Start copies those files from the
//! previous container (kept, renamed, until then) into the new one before
//! it starts — the docker counterpart of the process driver's carry.

use super::{engine_error, is_not_found};
use crate::config::{Config, DockerSection};
use crate::error::{AgentError, Result};
use crate::hubfiles::settings::{SETTINGS_FILE, WRITESTORE_PREFIX, lexical};
use bollard::Docker;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use prost::bytes::Bytes;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Component, Path};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

/// Where, inside the container, the hub keeps its store-and-forward files
/// when that place is not on the appData mount (and so dies with the
/// container): read from the settings file in appData the way the hub
/// resolves it (unset: the runtime directory; relative: against it). None
/// when the files live on the mount, which a recreate keeps.
pub fn container_dir(cfg: &Config, d: &DockerSection) -> Result<Option<String>> {
    let file = cfg.paths.appdata.join(SETTINGS_FILE);
    let value = match std::fs::read_to_string(&file) {
        // No settings file: the hub runs on its defaults.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AgentError::io("cannot read", &file)(e)),
        Ok(text) => store_forward_setting(&text).map_err(|why| {
            AgentError::FailedPrecondition(format!(
                "settings file {} cannot be used: {why}",
                file.display()
            ))
        })?,
    };
    Ok(resolve(d, value.as_deref()))
}

/// `directories.storeForwardData` of a settings file's text.
fn store_forward_setting(text: &str) -> std::result::Result<Option<String>, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match json
        .get("directories")
        .and_then(|d| d.get("storeForwardData"))
    {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err("`directories.storeForwardData` is not a string".into()),
    }
}

/// The in-container directory for a `storeForwardData` value, None when it
/// is on the appData mount.
fn resolve(d: &DockerSection, value: Option<&str>) -> Option<String> {
    let runtime = Path::new(&d.runtime_target);
    let dir = lexical(&runtime.join(value.unwrap_or("")));
    if dir.starts_with(lexical(Path::new(&d.appdata_target))) {
        return None;
    }
    Some(dir.display().to_string())
}

/// Copies the store-and-forward files of `dir` in container `from` into
/// the same directory of container `to` (created, not started). Returns
/// their names, sorted. Idempotent: the same files again overwrite
/// themselves. Temporary tars go to `scratch` and are removed.
pub async fn copy(
    engine: &Docker,
    from: &str,
    to: &str,
    dir: &str,
    scratch: &Path,
) -> Result<Vec<String>> {
    let whole = crate::scratch::file_in(scratch, "store-forward")?;
    // The directory as a tar (its entries under its base name).
    {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(dir)
            .build();
        let mut stream = engine.download_from_container(from, Some(options));
        let file = whole
            .reopen()
            .map_err(AgentError::io("cannot open", whole.path()))?;
        let mut out = tokio::fs::File::from_std(file);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // The image has no such directory: nothing was kept there.
                Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => {
                    return Err(engine_error(
                        "cannot read store-and-forward files from the previous hub container",
                    )(e));
                }
            };
            out.write_all(&chunk)
                .await
                .map_err(AgentError::io("cannot write", whole.path()))?;
        }
        out.flush()
            .await
            .map_err(AgentError::io("cannot write", whole.path()))?;
    }
    let scratch_dir = scratch.to_path_buf();
    let target = dir.trim_start_matches('/').to_string();
    let (names, picked) =
        tokio::task::spawn_blocking(move || pick(whole.path(), &target, &scratch_dir)).await??;
    if names.is_empty() {
        return Ok(names);
    }
    upload(engine, to, picked.path()).await?;
    tracing::info!(
        from = %from,
        to = %to,
        dir = %dir,
        files = names.len(),
        "carried store-and-forward files into the new hub container"
    );
    Ok(names)
}

/// From the downloaded tar of a directory, a tar of only its
/// store-and-forward files (regular files named `intelligencehub-writestore-*`
/// directly in it), named `<target>/<file>` for an upload at `/`.
fn pick(
    whole: &Path,
    target: &str,
    scratch: &Path,
) -> Result<(Vec<String>, tempfile::NamedTempFile)> {
    let picked = crate::scratch::file_in(scratch, "store-forward")?;
    let bad = |e: std::io::Error| {
        AgentError::Unavailable(format!(
            "the engine's archive of the previous hub container is unreadable: {e}"
        ))
    };
    let file = std::fs::File::open(whole).map_err(AgentError::io("cannot open", whole))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let out = picked
        .reopen()
        .map_err(AgentError::io("cannot open", picked.path()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(out));
    let mut names = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let parts: Vec<_> = path.components().collect();
        let [_, Component::Normal(name)] = parts.as_slice() else {
            continue;
        };
        let name = name.to_string_lossy().into_owned();
        if !name.starts_with(WRITESTORE_PREFIX)
            || entry.header().entry_type() != tar::EntryType::Regular
        {
            continue;
        }
        let mut header = entry.header().clone();
        builder
            .append_data(&mut header, format!("{target}/{name}"), &mut entry)
            .map_err(AgentError::io("cannot write", picked.path()))?;
        names.push(name);
    }
    let mut out = builder
        .into_inner()
        .map_err(AgentError::io("cannot write", picked.path()))?;
    out.flush()
        .map_err(AgentError::io("cannot write", picked.path()))?;
    names.sort();
    Ok((names, picked))
}

/// Streams a tar into container `to`, unpacked at `/`.
async fn upload(engine: &Docker, to: &str, tar: &Path) -> Result<()> {
    let mut reader = std::fs::File::open(tar).map_err(AgentError::io("cannot open", tar))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let feeder = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = err_tx.send(e);
                    return;
                }
            }
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx);
    let result = engine
        .upload_to_container(
            to,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_stream(body),
        )
        .await
        .map_err(engine_error(
            "cannot copy store-and-forward files into the new hub container",
        ));
    let _ = feeder.await;
    if let Ok(e) = err_rx.await {
        return Err(AgentError::io("cannot read", tar)(e));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> DockerSection {
        toml::from_str(
            "container = \"hub\"\nimage_repository = \"highbyte\"\n\
             appdata_target = \"/usr/local/highbyte/appData\"\n",
        )
        .unwrap()
    }

    #[test]
    fn unset_or_relative_store_forward_is_in_the_container_and_the_mount_is_not() {
        let d = section();
        assert_eq!(
            resolve(&d, None).as_deref(),
            Some("/usr/local/highbyte/runtime")
        );
        assert_eq!(
            resolve(&d, Some("sf")).as_deref(),
            Some("/usr/local/highbyte/runtime/sf")
        );
        assert_eq!(resolve(&d, Some("../appData/sf")), None);
        assert_eq!(resolve(&d, Some("/usr/local/highbyte/appData/sf")), None);
        assert_eq!(resolve(&d, Some("/data/sf")).as_deref(), Some("/data/sf"));
        assert_eq!(store_forward_setting("{}"), Ok(None));
        assert_eq!(
            store_forward_setting(r#"{"directories":{"storeForwardData":"x"}}"#),
            Ok(Some("x".into()))
        );
        assert!(store_forward_setting("[").is_err());
    }

    #[test]
    fn only_the_store_forward_files_of_the_directory_are_picked() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&whole).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("runtime/intelligencehub-writestore-a.db", b"a");
        add("runtime/intelligencehub-runtime.jar", b"jar");
        add("runtime/lib/intelligencehub-writestore-no.db", b"no");
        b.into_inner().unwrap();
        let (names, picked) = pick(&whole, "usr/local/highbyte/runtime", dir.path()).unwrap();
        assert_eq!(names, ["intelligencehub-writestore-a.db"]);
        let mut a = tar::Archive::new(std::fs::File::open(picked.path()).unwrap());
        let entries: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            entries,
            ["usr/local/highbyte/runtime/intelligencehub-writestore-a.db"]
        );
    }
}
