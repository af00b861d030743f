//! The plugin developer's side: run a plugin on a capture without a broker (`plugin run`,
//! `replay --print`), start a new plugin project (`plugin new`), and the size advice
//! `plugin build` gives.

#[cfg(feature = "authoring")]
pub mod new;
pub mod run;
mod sightings;
pub mod size;
