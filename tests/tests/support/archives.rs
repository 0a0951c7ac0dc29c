//! Runtime archives made bigger than the sandbox's, for tests whose
//! uploads must last long enough to be watched or cut.

use hubshift_sim::runtime::release_folder;
use hubshift_sim::sandbox::Sandbox;
use std::io::{Read, Write};
use std::path::Path;

/// The sandbox's runtime archive for `version`, rewritten to `out` with a
/// ballast file of `mib` MiB of random bytes in the runtime directory
/// (same layout: one release folder with `runtime/`, `configuration/`,
/// `appData/`). Stored without compression: the bytes are random anyway.
pub fn ballasted_archive(sandbox: &Sandbox, version: &str, mib: usize, out: &Path) {
    let plain = sandbox.runtime_archive(version).expect("runtime archive");
    let file = std::fs::File::open(&plain).expect("open runtime archive");
    let mut entries = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).expect("create archive"),
        flate2::Compression::none(),
    );
    let mut builder = tar::Builder::new(gz);
    for entry in entries.entries().expect("archive entries") {
        let mut entry = entry.expect("archive entry");
        let mut header = entry.header().clone();
        let path = entry.path().expect("entry path").into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        builder
            .append_data(&mut header, path, data.as_slice())
            .expect("copy entry");
    }
    let mut ballast = vec![0u8; mib * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in ballast.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_size(ballast.len() as u64);
    header.set_cksum();
    builder
        .append_data(
            &mut header,
            format!("{}/runtime/lib/ballast.bin", release_folder(version)),
            ballast.as_slice(),
        )
        .expect("add ballast");
    let mut file = builder
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip");
    file.flush().expect("flush archive");
}
