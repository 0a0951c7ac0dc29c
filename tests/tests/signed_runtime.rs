//! End to end: the real `hubshift` checks a runtime archive's minisign
//! signature against the inventory's `[trust]` keys before anything is
//! staged — keys made here, a sandbox group of real agents and PostgreSQL.

mod support;

use std::io::Cursor;
use std::path::Path;
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";

fn keypair() -> minisign::KeyPair {
    minisign::KeyPair::generate_unencrypted_keypair().unwrap()
}

/// Signs the file at `path` with `kp`, writing `OUT`.
fn sign(kp: &minisign::KeyPair, path: &Path, out: &Path) {
    let data = std::fs::read(path).unwrap();
    let sig = minisign::sign(
        Some(&kp.pk),
        &kp.sk,
        Cursor::new(data),
        Some("hub runtime 4.2.0, approved"),
        None,
    )
    .unwrap();
    std::fs::write(out, sig.to_string()).unwrap();
}

/// The minisign key id as `minisign` prints it.
fn key_id(kp: &minisign::KeyPair) -> String {
    format!(
        "{:016X}",
        u64::from_le_bytes(kp.pk.keynum().try_into().unwrap())
    )
}

fn add_trust(inventory: &Path, keys: &[&minisign::KeyPair], require: bool) {
    let mut text = std::fs::read_to_string(inventory).unwrap();
    let keys: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k.pk.to_base64()))
        .collect();
    text.push_str(&format!(
        "\n[trust]\nkeys = [{}]\nrequire_signature = {require}\n",
        keys.join(", ")
    ));
    std::fs::write(inventory, text).unwrap();
}

fn error_of(out: &std::process::Output) -> String {
    let events = events(out);
    find(&events, "error")
        .and_then(|e| e["error"].as_str())
        .unwrap_or_else(|| panic!("no error event: {}", text(out)))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_archive_signed_by_a_trusted_key_is_staged() {
    let (sandbox, inventory) = group_at(FROM).await;
    let archive = sandbox.runtime_archive(TO).unwrap();
    let (release, other) = (keypair(), keypair());
    add_trust(&inventory, &[&release], true);
    let good = sandbox.root.join("good.minisig");
    sign(&release, &archive, &good);
    let foreign = sandbox.root.join("foreign.minisig");
    sign(&other, &archive, &foreign);
    // The same archive with one byte changed, signed as the original was.
    let altered = sandbox.root.join("altered.tar.gz");
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&altered, bytes).unwrap();
    let archive_s = archive.display().to_string();
    let altered_s = altered.display().to_string();
    let (good_s, foreign_s) = (good.display().to_string(), foreign.display().to_string());
    let untouched = Untouched::capture(&sandbox);

    // Unsigned, while a signature is required.
    let out = run(&inventory, &upgrade_args(&archive_s, TO));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = error_of(&out);
    assert!(
        e.contains("not signed") && e.contains(&key_id(&release)),
        "{e}"
    );
    // Signed by a key the inventory does not trust: both keys named.
    let mut args = upgrade_args(&archive_s, TO);
    args.extend(["--signature", &foreign_s]);
    let out = run(&inventory, &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = error_of(&out);
    assert!(
        e.contains(&key_id(&other)) && e.contains(&key_id(&release)),
        "{e}"
    );
    // A trusted signature of another file.
    let mut args = upgrade_args(&altered_s, TO);
    args.extend(["--signature", &good_s]);
    let out = run(&inventory, &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = error_of(&out);
    assert!(
        e.contains("does not match") && e.contains("trust.keys[0]"),
        "{e}"
    );
    untouched.assert_same(&sandbox, "refused signatures");

    // The good signature: plan says who signed, and the upgrade goes on.
    let out = run(
        &inventory,
        &[
            "plan",
            "-g",
            GROUP,
            "--runtime",
            &archive_s,
            "--version",
            TO,
            "--signature",
            &good_s,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let planned = events(&out);
    let v = find(&planned, "signature_verified").unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(v["key_id"], key_id(&release));
    assert_eq!(v["trusted_comment"], "hub runtime 4.2.0, approved");
    let mut args = upgrade_args(&archive_s, TO);
    args.extend(["--signature", &good_s]);
    let out = run(&inventory, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let events = events(&out);
    assert!(find(&events, "signature_verified").is_some());
    assert_driver_runs(&sandbox, 0, TO).await;
}
