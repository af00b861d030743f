//! `probegate plugin new`: a plugin project from a template (`plugins/templates/`), complete
//! enough to build with one command outside this repository: the contract (`wit/`), and for
//! Rust the SDK and its test harness, are copied in from what this binary was built with.

use crate::config::is_valid_name;
use std::path::{Path, PathBuf};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    C,
    Zig,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    Analytics,
    Filter,
}

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The plugin's name: 1-32 characters of a-z, 0-9, '-', '_' (its MQTT topic level).
    pub name: String,
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// A filter judges sightings before analytics plugins see them.
    #[arg(long, value_enum, default_value = "analytics")]
    pub kind: TemplateKind,
    /// Where to create the project (default: ./NAME). It must not exist yet.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!("../../../plugins/templates/", $path))
    };
}

macro_rules! plugins_file {
    ($path:literal) => {
        include_str!(concat!("../../../plugins/", $path))
    };
}

const WIT: &str = plugins_file!("wit/plugin.wit");

/// (path in the project, contents, executable) for a language and kind.
fn files(lang: Lang, kind: TemplateKind) -> Vec<(&'static str, &'static str, bool)> {
    let mut files = vec![
        ("README.md", "", false),
        (".gitignore", template!("common.gitignore"), false),
        ("sightings.jsonl", template!("analytics.jsonl"), false),
    ];
    match lang {
        Lang::Rust => {
            files[0].1 = template!("rust/README.md");
            let (source, manifest) = match kind {
                TemplateKind::Analytics => (
                    template!("rust/analytics.rs"),
                    template!("rust/analytics.toml"),
                ),
                TemplateKind::Filter => {
                    (template!("rust/filter.rs"), template!("rust/filter.toml"))
                }
            };
            files.extend([
                ("Cargo.toml", template!("rust/Cargo.toml"), false),
                ("build.sh", template!("rust/build.sh"), true),
                ("src/lib.rs", source, false),
                ("{{stem}}.toml", manifest, false),
                (
                    "vendor/sdk/Cargo.toml",
                    plugins_file!("sdk/Cargo.toml"),
                    false,
                ),
                (
                    "vendor/sdk/README.md",
                    plugins_file!("sdk/README.md"),
                    false,
                ),
                (
                    "vendor/sdk/src/lib.rs",
                    plugins_file!("sdk/src/lib.rs"),
                    false,
                ),
                ("vendor/sdk/wit/plugin.wit", WIT, false),
                (
                    "vendor/sdk-test/Cargo.toml",
                    plugins_file!("sdk-test/Cargo.toml"),
                    false,
                ),
                (
                    "vendor/sdk-test/README.md",
                    plugins_file!("sdk-test/README.md"),
                    false,
                ),
                (
                    "vendor/sdk-test/src/lib.rs",
                    plugins_file!("sdk-test/src/lib.rs"),
                    false,
                ),
            ]);
        }
        Lang::C => {
            files[0].1 = template!("c/README.md");
            files.extend([
                ("build.sh", template!("c/build.sh"), true),
                ("wit/plugin.wit", WIT, false),
                ("json_out.h", template!("c/json_out.h"), false),
            ]);
            files.extend(match kind {
                TemplateKind::Analytics => [
                    ("window.h", template!("c/window.h"), false),
                    ("window.c", template!("c/window.c"), false),
                    ("plugin.c", template!("c/plugin.c"), false),
                    ("test_window.c", template!("c/test_window.c"), false),
                    ("{{stem}}.toml", template!("c/manifest.toml"), false),
                ],
                TemplateKind::Filter => [
                    ("gate.h", template!("c/gate.h"), false),
                    ("gate.c", template!("c/gate.c"), false),
                    ("plugin.c", template!("c/filter.c"), false),
                    ("test_gate.c", template!("c/test_gate.c"), false),
                    ("{{stem}}.toml", template!("c/filter.toml"), false),
                ],
            });
        }
        Lang::Zig => {
            files[0].1 = template!("zig/README.md");
            files.extend([
                ("build.sh", template!("zig/build.sh"), true),
                ("wit/plugin.wit", WIT, false),
                ("wit.zig", template!("zig/wit.zig"), false),
            ]);
            files.extend(match kind {
                TemplateKind::Analytics => [
                    ("window.zig", template!("zig/window.zig"), false),
                    ("plugin.zig", template!("zig/plugin.zig"), false),
                    ("{{stem}}.toml", template!("zig/manifest.toml"), false),
                ],
                TemplateKind::Filter => [
                    ("gate.zig", template!("zig/gate.zig"), false),
                    ("plugin.zig", template!("zig/filter.zig"), false),
                    ("{{stem}}.toml", template!("zig/filter.toml"), false),
                ],
            });
        }
    }
    files
}

/// `{{world}}` is the WIT world a C or Zig build generates bindings for; `{{logic}}` the
/// file stem of the kind's plain-language logic, which the unit tests build natively.
fn fill(text: &str, name: &str, stem: &str, kind: TemplateKind) -> String {
    let (world, logic) = match kind {
        TemplateKind::Analytics => ("analytics", "window"),
        TemplateKind::Filter => ("filter", "gate"),
    };
    text.replace("{{name}}", name)
        .replace("{{stem}}", stem)
        .replace("{{world}}", world)
        .replace("{{logic}}", logic)
}

/// Writes the project; prints what to do next.
pub fn create(args: &NewArgs) -> Result<(), String> {
    let name = args.name.as_str();
    if !is_valid_name(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "{name:?}: a plugin name is 1-32 characters of a-z, 0-9, '-', '_', starting with a letter"
        ));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        return Err(format!(
            "{}: already exists; choose a new directory",
            dir.display()
        ));
    }
    // Cargo turns '-' into '_' in the names of the files it builds; every language follows.
    let stem = name.replace('-', "_");
    for (path, text, executable) in files(args.lang, args.kind) {
        let path = dir.join(fill(path, name, &stem, args.kind));
        write(&path, &fill(text, name, &stem, args.kind), executable)?;
    }
    println!(
        "{}: a new {} {} plugin. Next:\n  cd {}\n  ./build.sh test\n  ./build.sh\n  probegate plugin run {stem}.wasm --input sightings.jsonl",
        dir.display(),
        match args.lang {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Zig => "Zig",
        },
        match args.kind {
            TemplateKind::Analytics => "analytics",
            TemplateKind::Filter => "filter",
        },
        dir.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str, executable: bool) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_names_its_plugin_and_leaves_no_placeholder() {
        for (lang, kind) in [
            (Lang::Rust, TemplateKind::Analytics),
            (Lang::Rust, TemplateKind::Filter),
            (Lang::C, TemplateKind::Analytics),
            (Lang::C, TemplateKind::Filter),
            (Lang::Zig, TemplateKind::Analytics),
            (Lang::Zig, TemplateKind::Filter),
        ] {
            let files = files(lang, kind);
            assert!(files.iter().any(|(p, _, x)| *p == "build.sh" && *x));
            for (path, text, _) in files {
                let filled = fill(text, "foot-fall", "foot_fall", kind);
                // Zig's format strings escape braces as `{{`: look for placeholders only.
                for left in ["{{name", "{{stem", "{{world", "{{logic", "{{ "] {
                    assert!(!filled.contains(left), "{lang:?} {path}");
                }
                if path == "{{stem}}.toml" {
                    assert!(filled.contains("name = \"foot-fall\""), "{lang:?}");
                    let want = format!("kind = \"{}\"", fill("{{world}}", "", "", kind));
                    assert!(filled.contains(&want), "{lang:?} {kind:?}");
                }
            }
        }
    }

    #[test]
    fn bad_names_and_existing_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let args = |name: &str| NewArgs {
            name: name.into(),
            lang: Lang::Rust,
            kind: TemplateKind::Analytics,
            dir: Some(dir.path().to_owned()),
        };
        assert!(
            create(&args("Foot Fall"))
                .unwrap_err()
                .contains("plugin name")
        );
        assert!(
            create(&args("footfall"))
                .unwrap_err()
                .contains("already exists")
        );
    }
}
