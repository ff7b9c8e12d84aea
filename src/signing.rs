//! Signed documents: detached Ed25519 signatures over a document's exact
//! bytes (feature `signing`).
//!
//! An [`Updater`](crate::Updater) given a public key applies only documents
//! signed by its private key; `flagstone keygen`, `sign` and `verify` (and
//! `publish --sign`) make and check the signatures with this module.
//!
//! Formats, all text:
//!
//! - a **signature** is the 64 signature bytes in standard base64 (88
//!   characters), in `FILE.sig`, `{key}.sig` in etcd, or the
//!   `X-Flagstone-Signature` header;
//! - a **private key** is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as
//!   `openssl genpkey -algorithm ed25519` writes it;
//! - a **public key** is the 32 key bytes in standard base64 (44
//!   characters), what [`UpdaterBuilder::public_key_base64`](crate::UpdaterBuilder::public_key_base64)
//!   takes; a SubjectPublicKeyInfo PEM (`openssl pkey -pubout`) is read too.
//!
//! ```
//! use flagstone::signing::SigningKey;
//!
//! let key = SigningKey::generate()?;
//! let document = br#"{ "version": 1 }"#;
//! let signature = key.sign(document);
//! key.public_key().verify(document, signature.as_bytes())?;
//! assert!(key.public_key().verify(b"{ \"version\": 2 }", signature.as_bytes()).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, VerifyingKey};

/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410), before
/// its 32-byte seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo, before its 32 bytes.
const SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why a key or a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(String);

impl SignatureError {
    #[cold]
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A private key that signs documents.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public_key()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key, from the operating system's random numbers.
    pub fn generate() -> Result<Self, SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| SignatureError::new(format!("no random numbers from the system: {e}")))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads a PKCS#8 PEM private key (as `openssl genpkey -algorithm
    /// ed25519` writes it).
    pub fn from_pem(text: &str) -> Result<Self, SignatureError> {
        let der = pem(text, "PRIVATE KEY")?;
        let seed = der
            .strip_prefix(&PKCS8_PREFIX)
            .and_then(|seed| <[u8; 32]>::try_from(seed).ok())
            .ok_or_else(|| SignatureError::new("not an Ed25519 private key (PKCS#8)"))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(self.0.as_bytes());
        to_pem(&der, "PRIVATE KEY")
    }

    /// The public key that checks this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The detached signature of a document's exact bytes, in base64.
    pub fn sign(&self, document: &[u8]) -> String {
        STANDARD.encode(self.0.sign(document).to_bytes())
    }
}

/// A public key that checks signatures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.to_base64()).finish()
    }
}

impl PublicKey {
    /// A public key from its 32 bytes.
    pub fn from_bytes(key: &[u8]) -> Result<Self, SignatureError> {
        let bytes: &[u8; 32] = key.try_into().map_err(|_| {
            SignatureError::new(format!("an Ed25519 public key is 32 bytes, not {}", key.len()))
        })?;
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|e| SignatureError::new(format!("not an Ed25519 public key: {e}")))
    }

    /// A public key from its 32 bytes in standard base64, or from a
    /// SubjectPublicKeyInfo PEM (`openssl pkey -pubout`).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            let der = pem(text, "PUBLIC KEY")?;
            let key = der
                .strip_prefix(&SPKI_PREFIX)
                .ok_or_else(|| SignatureError::new("not an Ed25519 public key (SPKI)"))?;
            return Self::from_bytes(key);
        }
        let bytes = STANDARD
            .decode(text)
            .map_err(|e| SignatureError::new(format!("a public key is base64: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// The key's 32 bytes in standard base64.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// Checks a detached signature (base64, or the raw 64 bytes) over a
    /// document's exact bytes.
    pub fn verify(&self, document: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let trimmed = signature.trim_ascii();
        let raw = match STANDARD.decode(trimmed) {
            Ok(decoded) => decoded,
            Err(_) if signature.len() == 64 => signature.to_vec(),
            Err(e) => return Err(SignatureError::new(format!("the signature is not base64: {e}"))),
        };
        let signature = Signature::from_slice(&raw).map_err(|_| {
            SignatureError::new(format!("a signature is 64 bytes, this one is {}", raw.len()))
        })?;
        self.0
            .verify_strict(document, &signature)
            .map_err(|_| SignatureError::new("the signature does not match the document and key"))
    }
}

/// The DER inside a PEM block with this label.
fn pem(text: &str, label: &str) -> Result<Vec<u8>, SignatureError> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| SignatureError::new(format!("not a PEM {label}")))?;
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(base64).map_err(|e| SignatureError::new(format!("a PEM body is base64: {e}")))
}

fn to_pem(der: &[u8], label: &str) -> String {
    let base64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of RFC 8032's first test vector, as `openssl genpkey` writes
    /// a PKCS#8 PEM of it.
    const RFC8032_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
";

    #[test]
    fn a_pem_key_reads_and_writes_back_and_signs_as_rfc_8032_says() {
        let key = SigningKey::from_pem(RFC8032_PEM).expect("pem");
        assert_eq!(key.to_pem(), RFC8032_PEM);
        assert_eq!(key.public_key().to_base64(), "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
        // RFC 8032, section 7.1, TEST 1: the empty message.
        let signature = STANDARD.decode(key.sign(b"")).expect("base64");
        assert_eq!(
            signature[..8],
            [0xe5, 0x56, 0x43, 0x00, 0xc3, 0x60, 0xac, 0x72],
            "the RFC's signature"
        );
    }

    #[test]
    fn public_keys_read_from_base64_or_pem() {
        let key = SigningKey::from_pem(RFC8032_PEM).expect("pem");
        let public = key.public_key();
        assert_eq!(PublicKey::parse(&public.to_base64()).expect("base64"), public);
        let spki = to_pem(&[&SPKI_PREFIX[..], public.0.as_bytes()].concat(), "PUBLIC KEY");
        assert_eq!(PublicKey::parse(&spki).expect("pem"), public);
        assert!(PublicKey::parse("AAAA").is_err());
    }
}
