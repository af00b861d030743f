//! The JSON Schemas of everything on the topic tree (`docs/schemas/`): they live in the
//! contract crate, which the back office shares.

pub use probegate_contract::schemas::*;
