//! Where flagstone meets the rest of a Rust service: an OpenFeature provider
//! (feature `openfeature`) and a tower layer that gives each request a
//! snapshot and its context (feature `tower`).

#[cfg(feature = "openfeature")]
pub mod openfeature;
#[cfg(feature = "tower")]
pub mod tower;
