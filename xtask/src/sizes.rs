//! Where a router binary's bytes go: `cargo xtask dist <target> --sizes` builds the release
//! binary once more without stripping and prints its sections (`size -A`) and its symbols'
//! sizes added up per crate (`nm -S -C`), grouped as in openwrt/README.md.
//!
//! Symbols only cover functions and read-only data; unwind tables and relocation data are in
//! the section list. Generic code of `core`/`alloc` instantiated for another crate counts as
//! `core`/`alloc`, as the demangled name says.

use crate::Result;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Crate-name prefixes and the group they are reported under, first match wins.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "Cranelift",
        &["cranelift", "regalloc2", "wasmtime_internal_cranelift"],
    ),
    (
        "wasmtime runtime and component model, wasmparser, Pulley",
        &[
            "wasmtime",
            "wasmparser",
            "wasm_encoder",
            "pulley",
            "wasmtime_internal",
        ],
    ),
    (
        "Rust std/core/alloc and backtraces (gimli, object, addr2line)",
        &[
            "std",
            "core",
            "alloc",
            "gimli",
            "object",
            "addr2line",
            "rustc_demangle",
            "hashbrown",
        ],
    ),
    ("TLS: rustls, ring, webpki", &["rustls", "ring", "webpki"]),
    (
        "tracing, tracing-subscriber (env-filter: regex)",
        &[
            "tracing",
            "tracing_subscriber",
            "tracing_core",
            "tracing_log",
            "regex",
            "regex_automata",
            "regex_syntax",
            "matchers",
            "nu_ansi_term",
            "sharded_slab",
        ],
    ),
    (
        "toml, serde, serde_json",
        &[
            "toml",
            "serde",
            "serde_json",
            "toml_parser",
            "toml_writer",
            "winnow",
        ],
    ),
    (
        "MQTT and async: tokio, rumqttc",
        &["tokio", "rumqttc", "mio", "bytes", "flume", "futures"],
    ),
    (
        "bundles: tar, minisign, sha2",
        &["tar", "minisign", "sha2", "ct_codecs", "blake2b_simd"],
    ),
    ("clap", &["clap", "clap_builder", "clap_lex"]),
    ("probegate itself", &["probegate"]),
];

/// The crate a demangled symbol belongs to: the first path segment, looking through
/// `<T as Trait>` to T, or to the trait when T is a bare type (`<u8 as core::fmt::Debug>`,
/// a blanket impl's `<T as alloc::string::ToString>`). `None` for C and assembly symbols.
fn crate_of(symbol: &str) -> Option<&str> {
    let s = symbol.trim_start_matches('<').trim_start_matches('&');
    let s = s.trim_start_matches("mut ").trim_start_matches("dyn ");
    if let Some((ty, trait_path)) = s.split_once(" as ")
        && !ty.contains("::")
    {
        return crate_of(trait_path);
    }
    let end = s.find("::")?;
    let head = s[..end].split([' ', '<']).next()?;
    let ok = !head.is_empty() && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(head)
}

fn group_of(krate: Option<&str>) -> &'static str {
    let Some(krate) = krate else {
        return "C and assembly: musl, libpcap, ring's C";
    };
    GROUPS
        .iter()
        .find(|(_, prefixes)| {
            prefixes
                .iter()
                .any(|p| krate == *p || krate.starts_with(&format!("{p}_")))
        })
        .map_or("other Rust crates", |(group, _)| group)
}

/// The breakdown of `binary` (unstripped) as text.
pub fn breakdown(binary: &Path) -> Result<String> {
    let run = |program: &str, args: &[&str]| -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .arg(binary)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut text = String::new();
    text.push_str("sections (size -A), those over 10 kB:\n");
    for line in run("size", &["-A"])?.lines() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(size)) = (f.next(), f.next()) else {
            continue;
        };
        if name.starts_with('.') && size.parse::<u64>().is_ok_and(|n| n > 10_000) {
            text.push_str(&format!("  {name:<16} {size:>10}\n"));
        }
    }

    let mut groups: BTreeMap<&str, u64> = BTreeMap::new();
    let mut crates: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    for line in run("nm", &["-S", "--size-sort", "-C"])?.lines() {
        // address size type name
        let mut f = line.splitn(4, ' ');
        let (Some(_), Some(size), Some(kind), Some(name)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "r" | "R" | "W" | "V") {
            continue;
        }
        let Ok(size) = u64::from_str_radix(size, 16) else {
            continue;
        };
        let krate = crate_of(name);
        *groups.entry(group_of(krate)).or_default() += size;
        *crates
            .entry(krate.unwrap_or("(C/asm)").to_owned())
            .or_default() += size;
        total += size;
    }
    let share = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    text.push_str(&format!(
        "symbols (nm -S -C: functions and read-only data), {total} bytes, by group:\n"
    ));
    let mut by_size: Vec<(&str, u64)> = groups.into_iter().collect();
    by_size.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (group, n) in by_size {
        text.push_str(&format!("  {n:>10} {:>5.1} %  {group}\n", share(n)));
    }
    text.push_str("largest crates:\n");
    let mut by_size: Vec<(String, u64)> = crates.into_iter().collect();
    by_size.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (krate, n) in by_size.into_iter().take(20) {
        text.push_str(&format!("  {n:>10} {:>5.1} %  {krate}\n", share(n)));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_attributed_to_their_crate() {
        assert_eq!(
            crate_of("wasmtime::runtime::func::Func::call"),
            Some("wasmtime")
        );
        assert_eq!(
            crate_of("<probegate::dot11::Frame as core::fmt::Debug>::fmt"),
            Some("probegate")
        );
        assert_eq!(
            crate_of("<&mut T as core::fmt::Write>::write_str"),
            Some("core")
        );
        assert_eq!(crate_of("<u8 as core::fmt::Debug>::fmt"), Some("core"));
        assert_eq!(
            crate_of("<rumqttc::v5::Packet as core::fmt::Debug>::fmt"),
            Some("rumqttc")
        );
        assert_eq!(crate_of("pcap_open_live"), None);
        assert_eq!(group_of(Some("cranelift_codegen")), "Cranelift");
        assert_eq!(group_of(Some("tracing_subscriber")), GROUPS[4].0);
        assert_eq!(group_of(Some("smallvec")), "other Rust crates");
        assert_eq!(group_of(None), "C and assembly: musl, libpcap, ring's C");
    }
}
