//! Signed runtimes: the inventory's `[trust]` keys (minisign public keys,
//! Ed25519) and the check of a runtime archive's signature, made before
//! anything is staged so that only an archive the organisation signed
//! reaches a plant.

use base64::Engine;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// `[trust]` of the inventory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// Trusted minisign public keys: the base64 line of a `minisign.pub`
    /// (`RW…`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Refuse an archive without a good signature by one of `keys`.
    #[serde(default)]
    pub require_signature: bool,
}

/// One trusted key, parsed.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Its minisign key id, as `minisign` prints it (16 hex digits).
    pub id: String,
    /// Where it is in the inventory (`trust.keys[1]`).
    pub key: String,
    public: minisign_verify::PublicKey,
}

/// Why a `[trust]` section or a signature is not accepted. Every message
/// names the key or the file.
#[derive(Debug, Error)]
pub enum TrustError {
    /// A key of the inventory does not parse.
    #[error(
        "`trust.keys[{index}]`: not a minisign public key (the base64 line of a minisign.pub, RW…): {reason}"
    )]
    BadKey {
        /// Its index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// `require_signature` without a key.
    #[error("`trust.require_signature` is true but `trust.keys` names no key")]
    NoKeys,
    /// An unsigned archive where a signature is required.
    #[error(
        "runtime archive {archive} is not signed (--signature FILE) and `trust.require_signature` is true (trusted: {trusted}); nothing was changed"
    )]
    Unsigned {
        /// The archive.
        archive: PathBuf,
        /// The trusted key ids.
        trusted: String,
    },
    /// `--signature` without a trusted key to check it with.
    #[error(
        "--signature {signature}: the inventory trusts no key (`trust.keys`); nothing was changed"
    )]
    NothingTrusted {
        /// The signature file.
        signature: PathBuf,
    },
    /// The signature file cannot be read or is not a minisign signature.
    #[error("--signature {signature}: {reason}; nothing was changed")]
    BadSignature {
        /// The signature file.
        signature: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signed by a key the inventory does not trust.
    #[error(
        "runtime archive {archive} is signed by key {signer}, which is not in `trust.keys` (trusted: {trusted}); nothing was changed"
    )]
    UntrustedKey {
        /// The archive.
        archive: PathBuf,
        /// The key id of the signature.
        signer: String,
        /// The trusted key ids.
        trusted: String,
    },
    /// The signature does not match the archive.
    #[error(
        "runtime archive {archive} does not match its signature by key {id} (`{key}`): the file is not the one that was signed; nothing was changed"
    )]
    Mismatch {
        /// The archive.
        archive: PathBuf,
        /// The key id.
        id: String,
        /// Where the key is in the inventory.
        key: String,
    },
    /// The archive cannot be read.
    #[error("reading runtime archive {archive}: {source}")]
    Read {
        /// The archive.
        archive: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
}

/// A signature that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key id that signed.
    pub key_id: String,
    /// The signature's trusted comment (signed with it).
    pub trusted_comment: String,
}

/// The `[trust]` section, its keys parsed.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The parsed keys.
    pub keys: Vec<TrustedKey>,
    /// Whether a signature is required.
    pub require_signature: bool,
}

/// The id minisign prints for the 8 key-id bytes (little endian).
fn key_id(bytes: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    format!("{:016X}", u64::from_le_bytes(b))
}

impl Trust {
    /// Parses and checks `[trust]`.
    pub fn from_section(s: &TrustSection) -> Result<Self, TrustError> {
        let mut keys = Vec::new();
        for (index, k) in s.keys.iter().enumerate() {
            let k = k.trim();
            let bad = |reason: String| TrustError::BadKey { index, reason };
            let public =
                minisign_verify::PublicKey::from_base64(k).map_err(|e| bad(e.to_string()))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(k)
                .map_err(|e| bad(e.to_string()))?;
            keys.push(TrustedKey {
                id: key_id(&raw[2..10]),
                key: format!("trust.keys[{index}]"),
                public,
            });
        }
        if s.require_signature && keys.is_empty() {
            return Err(TrustError::NoKeys);
        }
        Ok(Trust {
            keys,
            require_signature: s.require_signature,
        })
    }

    fn trusted(&self) -> String {
        let ids: Vec<_> = self.keys.iter().map(|k| k.id.as_str()).collect();
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    }

    /// Checks `archive` against `signature` (a minisign `.minisig` file).
    /// `Ok(None)`: unsigned, and no signature is required.
    pub fn verify(
        &self,
        archive: &Path,
        signature: Option<&Path>,
    ) -> Result<Option<Verified>, TrustError> {
        let Some(signature) = signature else {
            if self.require_signature {
                return Err(TrustError::Unsigned {
                    archive: archive.to_path_buf(),
                    trusted: self.trusted(),
                });
            }
            return Ok(None);
        };
        if self.keys.is_empty() {
            return Err(TrustError::NothingTrusted {
                signature: signature.to_path_buf(),
            });
        }
        let bad = |reason: String| TrustError::BadSignature {
            signature: signature.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(signature).map_err(|e| bad(e.to_string()))?;
        let sig = minisign_verify::Signature::decode(&text)
            .map_err(|e| bad(format!("not a minisign signature ({e})")))?;
        let raw = text
            .lines()
            .nth(1)
            .and_then(|l| {
                base64::engine::general_purpose::STANDARD
                    .decode(l.trim())
                    .ok()
            })
            .filter(|r| r.len() >= 10)
            .ok_or_else(|| bad("not a minisign signature".into()))?;
        let signer = key_id(&raw[2..10]);
        let Some(key) = self.keys.iter().find(|k| k.id == signer) else {
            return Err(TrustError::UntrustedKey {
                archive: archive.to_path_buf(),
                signer,
                trusted: self.trusted(),
            });
        };
        let read_err = |source| TrustError::Read {
            archive: archive.to_path_buf(),
            source,
        };
        let mismatch = || TrustError::Mismatch {
            archive: archive.to_path_buf(),
            id: key.id.clone(),
            key: key.key.clone(),
        };
        // Streamed: runtimes are large. Legacy (not prehashed) signatures
        // are refused as a mismatch.
        let mut verifier = key.public.verify_stream(&sig).map_err(|_| mismatch())?;
        let mut file = std::fs::File::open(archive).map_err(read_err)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            verifier.update(&buf[..n]);
        }
        verifier.finalize().map_err(|_| mismatch())?;
        Ok(Some(Verified {
            key_id: key.id.clone(),
            trusted_comment: sig.trusted_comment().to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn keypair() -> minisign::KeyPair {
        minisign::KeyPair::generate_unencrypted_keypair().unwrap()
    }

    fn sign(kp: &minisign::KeyPair, data: &[u8]) -> String {
        minisign::sign(
            Some(&kp.pk),
            &kp.sk,
            Cursor::new(data),
            Some("hub 4.2.0"),
            None,
        )
        .unwrap()
        .to_string()
    }

    fn trust(keys: &[&minisign::KeyPair], require: bool) -> Trust {
        Trust::from_section(&TrustSection {
            keys: keys.iter().map(|k| k.pk.to_base64()).collect(),
            require_signature: require,
        })
        .unwrap()
    }

    fn files(data: &[u8], sig: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("rt.tar.gz");
        let s = dir.path().join("rt.tar.gz.minisig");
        std::fs::write(&a, data).unwrap();
        std::fs::write(&s, sig).unwrap();
        (dir, a, s)
    }

    #[test]
    fn a_good_signature_by_a_trusted_key_passes() {
        let (k1, k2) = (keypair(), keypair());
        let (_d, a, s) = files(b"runtime", &sign(&k2, b"runtime"));
        let t = trust(&[&k1, &k2], true);
        let v = t.verify(&a, Some(&s)).unwrap().unwrap();
        assert_eq!(v.key_id, t.keys[1].id);
        assert_eq!(v.trusted_comment, "hub 4.2.0");
    }

    #[test]
    fn a_changed_archive_is_refused_naming_the_key() {
        let k = keypair();
        let (_d, a, s) = files(b"runtime, altered", &sign(&k, b"runtime"));
        let e = trust(&[&k], false).verify(&a, Some(&s)).unwrap_err();
        assert!(matches!(e, TrustError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("trust.keys[0]"), "{e}");
    }

    #[test]
    fn an_untrusted_signer_is_named() {
        let (k1, k2) = (keypair(), keypair());
        let (_d, a, s) = files(b"runtime", &sign(&k2, b"runtime"));
        let t = trust(&[&k1], false);
        let e = t.verify(&a, Some(&s)).unwrap_err();
        let TrustError::UntrustedKey {
            signer, trusted, ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(trusted, &t.keys[0].id);
        assert_eq!(signer, &trust(&[&k2], false).keys[0].id);
    }

    #[test]
    fn unsigned_is_refused_only_when_required() {
        let k = keypair();
        let (_d, a, _s) = files(b"runtime", "");
        assert_eq!(trust(&[&k], false).verify(&a, None).unwrap(), None);
        let e = trust(&[&k], true).verify(&a, None).unwrap_err();
        assert!(matches!(e, TrustError::Unsigned { .. }), "{e}");
    }

    #[test]
    fn bad_keys_and_files_are_named() {
        let e = Trust::from_section(&TrustSection {
            keys: vec!["not a key".into()],
            require_signature: false,
        })
        .unwrap_err();
        assert!(e.to_string().contains("trust.keys[0]"), "{e}");
        let e = Trust::from_section(&TrustSection {
            keys: vec![],
            require_signature: true,
        })
        .unwrap_err();
        assert!(matches!(e, TrustError::NoKeys));
        let k = keypair();
        let (_d, a, s) = files(b"runtime", "garbage\n");
        let e = trust(&[&k], false).verify(&a, Some(&s)).unwrap_err();
        assert!(matches!(e, TrustError::BadSignature { .. }), "{e}");
    }
}
