//! `probegate plugin new`: a plugin project from a template.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The plugin's name (a-z, 0-9, '-', '_'); also the project directory.
    pub name: String,
}

pub fn create(_args: &NewArgs) -> Result<(), String> {
    let _ = PathBuf::new();
    Err("not yet".into())
}
