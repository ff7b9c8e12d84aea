//! Detached Ed25519 signatures over the exact bytes of a document.
//!
//! The signature is 64 bytes, carried as standard base64 (raw 64 bytes are
//! accepted too): in a sidecar file `<path>.sig`, or for HTTP in the
//! `X-Flagstone-Signature` response header or else at `<url>.sig`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};

pub(crate) struct Verifier {
    key: VerifyingKey,
}

impl Verifier {
    pub(crate) fn new(key: &[u8]) -> Result<Self, String> {
        let bytes: &[u8; 32] = key
            .try_into()
            .map_err(|_| format!("an Ed25519 public key is 32 bytes, not {}", key.len()))?;
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|e| format!("not an Ed25519 public key: {e}"))?;
        Ok(Self { key })
    }

    pub(crate) fn from_base64(key: &str) -> Result<Self, String> {
        let bytes =
            STANDARD.decode(key.trim()).map_err(|e| format!("public key is not base64: {e}"))?;
        Self::new(&bytes)
    }

    pub(crate) fn verify(&self, body: &[u8], signature: Option<&[u8]>) -> Result<(), String> {
        let signature = signature.ok_or("the document is unsigned")?;
        let raw = match STANDARD.decode(trim_ascii(signature)) {
            Ok(decoded) => decoded,
            Err(_) if signature.len() == 64 => signature.to_vec(),
            Err(e) => return Err(format!("the signature is not base64: {e}")),
        };
        let signature = Signature::from_slice(&raw)
            .map_err(|_| format!("a signature is 64 bytes, this one is {}", raw.len()))?;
        self.key
            .verify_strict(body, &signature)
            .map_err(|_| "the signature does not match the document and key".to_owned())
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Raw signature bytes as standard base64.
pub(crate) fn encode(signature: &[u8]) -> String {
    STANDARD.encode(signature)
}
