//! Checking detached Ed25519 signatures ([`crate::signing`]) as documents
//! arrive.
//!
//! The signature is read from a sidecar file `<path>.sig`, for HTTP from
//! the `X-Flagstone-Signature` header or else `<url path>.sig`, for etcd
//! from `{key}.sig`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::SignatureRefused;
use crate::signing::{PublicKey, SignatureError};

pub(crate) struct Verifier {
    key: PublicKey,
}

impl Verifier {
    pub(crate) fn new(key: &[u8]) -> Result<Self, SignatureError> {
        PublicKey::from_bytes(key).map(|key| Self { key })
    }

    pub(crate) fn from_base64(key: &str) -> Result<Self, SignatureError> {
        PublicKey::parse(key).map(|key| Self { key })
    }

    pub(crate) fn verify(
        &self,
        body: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<(), SignatureRefused> {
        let signature = signature.ok_or(SignatureRefused::Unsigned)?;
        self.key.verify(body, signature).map_err(SignatureRefused::Invalid)
    }
}

/// Raw signature bytes as standard base64.
pub(crate) fn encode(signature: &[u8]) -> String {
    STANDARD.encode(signature)
}
