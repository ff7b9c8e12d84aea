//! Checking detached Ed25519 signatures ([`crate::signing`]) as documents
//! arrive.
//!
//! The signature is read from a sidecar file `<path>.sig`, for HTTP from
//! the `X-Flagstone-Signature` header or else `<url path>.sig`, for etcd
//! from `{key}.sig`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::signing::PublicKey;

pub(crate) struct Verifier {
    key: PublicKey,
}

impl Verifier {
    pub(crate) fn new(key: &[u8]) -> Result<Self, String> {
        PublicKey::from_bytes(key).map(|key| Self { key }).map_err(|e| e.to_string())
    }

    pub(crate) fn from_base64(key: &str) -> Result<Self, String> {
        PublicKey::parse(key).map(|key| Self { key }).map_err(|e| format!("public key: {e}"))
    }

    pub(crate) fn verify(&self, body: &[u8], signature: Option<&[u8]>) -> Result<(), String> {
        let signature = signature.ok_or("the document is unsigned")?;
        self.key.verify(body, signature).map_err(|e| e.to_string())
    }
}

/// Raw signature bytes as standard base64.
pub(crate) fn encode(signature: &[u8]) -> String {
    STANDARD.encode(signature)
}
