//! OpenWrt 25.x packages: apk-tools v3 `.apk` files (the "ADB" format), written and checked
//! without apk-tools, which Debian does not ship.
//!
//! # Format
//!
//! A v3 package is `ADBd` + raw deflate of: `ADB.`, the schema `pckg`, then 8-byte aligned
//! blocks (a little-endian `u32` of 2 type bits and 30 size bits, then the payload): one ADB
//! block holding all metadata, optional SIG blocks, then one DATA block per non-empty file.
//! Inside the ADB block every value is a `u32` tag: 4 type bits and 28 bits of either the value
//! itself or the offset (from the block start) of its data. Objects and arrays are slot lists
//! whose slot 0 is the slot count. Files are grouped under their directory; each file records its
//! SHA-256, which is what protects the DATA blocks (an unsigned package has nothing else).
//!
//! Type codes, field numbers and block layout are facts taken from apk-tools (`src/adb.h`,
//! `src/apk_adb.h`, `src/app_mkpkg.c`, `doc/apk-v3.5.scd`, v3.0.6-6-g90b974f); no code of
//! apk-tools (GPL-2.0) is copied here. [`write_apk`] lays values out in the order `apk mkpkg`
//! writes them, so for the same input the metadata block is byte-identical to mkpkg's (the
//! deflate stream differs: another compressor).
//!
//! # OpenWrt conventions (`include/package-pack.mk`, `package/base-files/files/lib/functions.sh`)
//!
//! - Version `<version>-r<release>` (apk's own syntax, checked here), not opkg's `<v>-<release>`;
//!   arch is the same string as opkg's (`aarch64_cortex-a53`); the file is `<name>-<version>.apk`.
//! - The payload carries `lib/apk/packages/<name>.list` (every file, `/`-rooted, sorted), which
//!   `default_postinst`/`default_prerm` read to enable and start, or stop and disable, the
//!   `/etc/init.d` scripts. [`write_apk`] adds it.
//! - apk v3 has no conffile flag. apk itself protects `/etc` (its built-in default, used when no
//!   `protected_paths` are configured, is `+etc`: a file the user changed is kept, the new one is
//!   written as `*.apk-new`). OpenWrt additionally ships `lib/apk/packages/<name>.conffiles`
//!   (the paths) and `<name>.conffiles_static` (`<path> <sha256>` lines), used to carry the
//!   config across a sysupgrade; [`write_apk`] adds both for [`ApkMeta::conffiles`].
//! - Scripts: `post-install`, `post-upgrade` and `pre-deinstall`, which set `root`/`pkgname` and
//!   call `default_postinst`/`default_prerm`: see [`openwrt_scripts`].
//!
//! Packages are unsigned, like the local `.ipk`s: install with `apk add --allow-untrusted`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use sha2::{Digest, Sha256};

/// What goes into the package's `info` and the OpenWrt bookkeeping files.
#[derive(Debug, Clone)]
pub struct ApkMeta {
    pub name: String,
    /// An apk version, e.g. `0.2.0-r1`.
    pub version: String,
    /// OpenWrt's package arch, the same as opkg's, e.g. `aarch64_cortex-a53`.
    pub arch: String,
    pub description: String,
    pub license: String,
    pub url: Option<String>,
    pub maintainer: Option<String>,
    /// Package names, optionally with a constraint: `libc`, `busybox>=1.36`, `!conflicting`.
    pub depends: Vec<String>,
    /// Other names this package stands for, e.g. `probegate=0.2.0-r1` for a variant that
    /// replaces `probegate` (add `!probegate` to `depends` for the conflict).
    pub provides: Vec<String>,
    /// Absolute paths (`/etc/...`) of the files to keep over sysupgrade.
    pub conffiles: Vec<String>,
    /// Every file's mtime: `SOURCE_DATE_EPOCH`, as mkpkg records it when that is set.
    pub mtime: u64,
}

/// What [`check_apk`] read from a package. Installed size is the sum of the file sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkSummary {
    /// `deflate` (`ADBd`) or `none` (`ADB.`).
    pub compression: &'static str,
    pub signed: bool,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub description: String,
    pub license: String,
    pub url: Option<String>,
    pub maintainer: Option<String>,
    pub origin: Option<String>,
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub installed_size: u64,
    /// The `hashes` field holds the SHA-256 prefix of the metadata block, as mkpkg writes it.
    pub identity_ok: bool,
    pub dirs: Vec<ApkDir>,
    pub files: Vec<ApkFile>,
    /// Script name (`post-install`, ...) to its text.
    pub scripts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkDir {
    /// Without a leading slash; the root is `""`.
    pub path: String,
    pub mode: u32,
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkFile {
    /// Without a leading slash.
    pub path: String,
    pub mode: u32,
    pub user: String,
    pub group: String,
    pub size: u64,
    pub mtime: u64,
    /// The stored SHA-256, in hex (empty if none).
    pub sha256: String,
    /// The stored SHA-256 matches the data (and the data has the stored size).
    pub digest_ok: bool,
    pub data: Vec<u8>,
}

impl ApkSummary {
    /// Errors unless every file's digest and the package identity check out.
    pub fn verify(&self) -> Result<(), String> {
        let bad: Vec<&str> = self
            .files
            .iter()
            .filter(|f| !f.digest_ok)
            .map(|f| f.path.as_str())
            .collect();
        if !bad.is_empty() {
            return Err(format!("digest mismatch: {}", bad.join(", ")));
        }
        if !self.identity_ok {
            return Err("the info hashes do not match the metadata block".into());
        }
        Ok(())
    }

    pub fn file(&self, path: &str) -> Option<&ApkFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

// Wire format (apk-tools src/adb.h).
const MAGIC_PLAIN: &[u8; 4] = b"ADB.";
const MAGIC_DEFLATE: &[u8; 4] = b"ADBd";
/// `ADBc` + a 2-byte {algorithm, level}: only deflate (1) is read here.
const MAGIC_COMPRESSED: &[u8; 4] = b"ADBc";
const SCHEMA_PACKAGE: &[u8; 4] = b"pckg";
const BLOCK_ADB: u32 = 0;
const BLOCK_SIG: u32 = 1;
const BLOCK_DATA: u32 = 2;
const BLOCK_EXT: u32 = 3;
const BLOCK_ALIGN: usize = 8;
const T_SPECIAL: u32 = 0x0;
const T_INT: u32 = 0x1;
const T_INT32: u32 = 0x2;
const T_INT64: u32 = 0x3;
const T_BLOB8: u32 = 0x8;
const T_BLOB16: u32 = 0x9;
const T_BLOB32: u32 = 0xa;
const T_ARRAY: u32 = 0xd;
const T_OBJECT: u32 = 0xe;
const VALUE_MASK: u32 = 0x0fff_ffff;
const NULL: u32 = 0;
/// The ADB block starts with {compat version 0, version 0, reserved u16, root value}.
const ADB_HEADER_LEN: usize = 8;
/// The package identity in `info.hashes`: a SHA-1-sized prefix of a SHA-256.
const IDENTITY_LEN: usize = 20;

// Field numbers (apk-tools src/apk_adb.h).
const PKG_INFO: usize = 1;
const PKG_PATHS: usize = 2;
const PKG_SCRIPTS: usize = 3;
const PI_NAME: usize = 1;
const PI_VERSION: usize = 2;
const PI_HASHES: usize = 3;
const PI_DESCRIPTION: usize = 4;
const PI_ARCH: usize = 5;
const PI_LICENSE: usize = 6;
const PI_ORIGIN: usize = 7;
const PI_MAINTAINER: usize = 8;
const PI_URL: usize = 9;
const PI_INSTALLED_SIZE: usize = 12;
const PI_DEPENDS: usize = 15;
const PI_PROVIDES: usize = 16;
const PI_SLOTS: usize = 22;
const DEP_NAME: usize = 1;
const DEP_VERSION: usize = 2;
const DEP_MATCH: usize = 3;
const ACL_MODE: usize = 1;
const ACL_USER: usize = 2;
const ACL_GROUP: usize = 3;
const FI_NAME: usize = 1;
const FI_ACL: usize = 2;
const FI_SIZE: usize = 3;
const FI_MTIME: usize = 4;
const FI_HASH: usize = 5;
const FI_TARGET: usize = 6;
const DI_NAME: usize = 1;
const DI_ACL: usize = 2;
const DI_FILES: usize = 3;
/// Script slots 1..=7, in field order.
const SCRIPTS: [&str; 7] = [
    "trigger",
    "pre-install",
    "post-install",
    "pre-deinstall",
    "post-deinstall",
    "pre-upgrade",
    "post-upgrade",
];
// Dependency match bits (apk-tools src/apk_version.h).
const V_EQUAL: u32 = 1;
const V_LESS: u32 = 2;
const V_GREATER: u32 = 4;
const V_FUZZY: u32 = 8;
const V_CONFLICT: u32 = 16;
const V_ANY: u32 = V_EQUAL | V_LESS | V_GREATER;

/// The scripts OpenWrt's `package-pack.mk` generates for a package without its own
/// postinst/prerm: `(name, text)` for [`write_apk`]. On upgrade apk runs `post-upgrade` (with
/// `PKG_UPGRADE=1`: services restart but stay enabled), and no `pre-deinstall`.
pub fn openwrt_scripts(pkgname: &str) -> Vec<(&'static str, String)> {
    let post_install_body = format!(
        "[ \"${{IPKG_NO_SCRIPT}}\" = \"1\" ] && exit 0\n\
         [ -s ${{IPKG_INSTROOT}}/lib/functions.sh ] || exit 0\n\
         . ${{IPKG_INSTROOT}}/lib/functions.sh\n\
         export root=\"${{IPKG_INSTROOT}}\"\n\
         export pkgname=\"{pkgname}\"\n\
         add_group_and_user\n\
         default_postinst\n"
    );
    vec![
        ("post-install", format!("#!/bin/sh\n{post_install_body}")),
        (
            "post-upgrade",
            format!("#!/bin/sh\nexport PKG_UPGRADE=1\n{post_install_body}"),
        ),
        (
            "pre-deinstall",
            format!(
                "#!/bin/sh\n\
                 [ -s ${{IPKG_INSTROOT}}/lib/functions.sh ] || exit 0\n\
                 . ${{IPKG_INSTROOT}}/lib/functions.sh\n\
                 export root=\"${{IPKG_INSTROOT}}\"\n\
                 export pkgname=\"{pkgname}\"\n\
                 default_prerm\n"
            ),
        ),
    ]
}

/// Writes `out` (deflate-compressed, unsigned) from `files` (path without leading slash,
/// contents, mode) plus OpenWrt's `lib/apk/packages/<name>.list` and, for `meta.conffiles`,
/// `.conffiles`/`.conffiles_static`. Every parent directory gets a 0755 root-owned path entry.
/// `scripts` are `(apk script name, text)`, e.g. from [`openwrt_scripts`].
pub fn write_apk(
    meta: &ApkMeta,
    files: &[(String, Vec<u8>, u32)],
    scripts: &[(&str, &str)],
    out: &Path,
) -> Result<(), String> {
    let files = with_openwrt_files(meta, files)?;
    let raw = package_bytes(meta, &files, scripts)?;
    let mut enc = DeflateEncoder::new(MAGIC_DEFLATE.to_vec(), Compression::best());
    enc.write_all(&raw).map_err(|e| format!("deflate: {e}"))?;
    let bytes = enc.finish().map_err(|e| format!("deflate: {e}"))?;
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// The payload plus what OpenWrt's build adds under `lib/apk/packages/`.
fn with_openwrt_files(
    meta: &ApkMeta,
    files: &[(String, Vec<u8>, u32)],
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    let meta_dir = "lib/apk/packages";
    // Like `find -type f | sort` before the list itself is moved in.
    let mut list: Vec<String> = files.iter().map(|(p, _, _)| format!("/{p}")).collect();
    list.sort();
    let mut all = files.to_vec();
    all.push((
        format!("{meta_dir}/{}.list", meta.name),
        list.iter()
            .map(|p| format!("{p}\n"))
            .collect::<String>()
            .into(),
        0o644,
    ));
    if !meta.conffiles.is_empty() {
        let mut names = String::new();
        let mut sums = String::new();
        for path in &meta.conffiles {
            names.push_str(&format!("{path}\n"));
            let rel = path.strip_prefix('/').unwrap_or(path);
            let (_, data, _) = files
                .iter()
                .find(|(p, _, _)| p == rel)
                .ok_or_else(|| format!("conffile {path} is not among the files"))?;
            sums.push_str(&format!("{path} {}\n", hex(&Sha256::digest(data))));
        }
        all.push((
            format!("{meta_dir}/{}.conffiles", meta.name),
            names.into(),
            0o644,
        ));
        all.push((
            format!("{meta_dir}/{}.conffiles_static", meta.name),
            sums.into(),
            0o644,
        ));
    }
    Ok(all)
}

/// The uncompressed package: `ADB.pckg`, the ADB block, the DATA blocks.
fn package_bytes(
    meta: &ApkMeta,
    files: &[(String, Vec<u8>, u32)],
    scripts: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    if !valid_name(&meta.name) {
        return Err(format!("invalid apk package name {:?}", meta.name));
    }
    if !valid_version(&meta.version) {
        return Err(format!(
            "invalid apk version {:?} (OpenWrt's apk packages use e.g. 0.2.0-r1)",
            meta.version
        ));
    }
    let tree = tree(files)?;
    let mut adb = AdbWriter::new();

    // Values are written children first, in mkpkg's order, so the block matches its output.
    let mut info = vec![NULL; PI_SLOTS];
    info[PI_NAME] = adb.blob(meta.name.as_bytes());
    info[PI_VERSION] = adb.blob(meta.version.as_bytes());
    info[PI_DESCRIPTION] = adb.blob(meta.description.as_bytes());
    info[PI_ARCH] = adb.blob(meta.arch.as_bytes());
    info[PI_LICENSE] = adb.blob(meta.license.as_bytes());
    info[PI_MAINTAINER] = adb.blob(meta.maintainer.as_deref().unwrap_or("").as_bytes());
    info[PI_URL] = adb.blob(meta.url.as_deref().unwrap_or("").as_bytes());
    info[PI_DEPENDS] = dep_array(&mut adb, &meta.depends)?;
    info[PI_PROVIDES] = dep_array(&mut adb, &meta.provides)?;

    let mut paths = vec![NULL];
    let mut installed_size = 0;
    for (dir, entries) in &tree {
        let mut dir_files = vec![NULL];
        for (name, data, mode) in entries {
            installed_size += data.len() as u64;
            let mut file = [NULL; FI_TARGET + 1];
            file[FI_NAME] = adb.blob(name.as_bytes());
            file[FI_HASH] = adb.blob(&Sha256::digest(data));
            file[FI_MTIME] = adb.int(meta.mtime);
            file[FI_SIZE] = adb.int(data.len() as u64);
            file[FI_ACL] = acl(&mut adb, *mode);
            dir_files.push(adb.object(&file));
        }
        let mut entry = [NULL; DI_FILES + 1];
        entry[DI_NAME] = adb.blob(dir.as_bytes());
        entry[DI_ACL] = acl(&mut adb, 0o755);
        entry[DI_FILES] = adb.object(&dir_files);
        paths.push(adb.object(&entry));
    }
    // mkpkg counts at least a byte, so that apk does not take it for a metadata-only package.
    info[PI_INSTALLED_SIZE] = adb.int(installed_size.max(1));
    // Filled in below, once the whole block can be hashed.
    let (identity_val, identity_at) = adb.blob_uncached(&[0; IDENTITY_LEN]);
    info[PI_HASHES] = identity_val;

    let mut pkg = [NULL; PKG_SCRIPTS + 1];
    pkg[PKG_INFO] = adb.object(&info);
    pkg[PKG_PATHS] = adb.object(&paths);
    let mut texts: [Option<&str>; SCRIPTS.len()] = [None; SCRIPTS.len()];
    for (name, text) in scripts {
        let i = SCRIPTS
            .iter()
            .position(|s| s == name)
            .ok_or_else(|| format!("unknown apk script {name:?}; apk knows {SCRIPTS:?}"))?;
        if texts[i].replace(text).is_some() {
            return Err(format!("script {name} given twice"));
        }
    }
    let mut script_slots = vec![NULL];
    for text in texts {
        script_slots.push(adb.blob(text.unwrap_or_default().as_bytes()));
    }
    pkg[PKG_SCRIPTS] = adb.object(&script_slots);
    let root = adb.object(&pkg);
    let mut block = adb.finish(root)?;
    let digest = Sha256::digest(&block);
    block[identity_at..identity_at + IDENTITY_LEN].copy_from_slice(&digest[..IDENTITY_LEN]);

    let mut out = Vec::new();
    out.extend_from_slice(MAGIC_PLAIN);
    out.extend_from_slice(SCHEMA_PACKAGE);
    push_block(&mut out, BLOCK_ADB, &[&block])?;
    for (path_idx, (_, entries)) in tree.iter().enumerate() {
        for (file_idx, (_, data, _)) in entries.iter().enumerate() {
            // An empty file has no DATA block: apk creates it from the metadata alone.
            if data.is_empty() {
                continue;
            }
            let mut header = [0u8; 8];
            header[..4].copy_from_slice(&(path_idx as u32 + 1).to_le_bytes());
            header[4..].copy_from_slice(&(file_idx as u32 + 1).to_le_bytes());
            push_block(&mut out, BLOCK_DATA, &[&header, data])?;
        }
    }
    Ok(out)
}

type Tree<'a> = BTreeMap<String, Vec<(&'a str, &'a [u8], u32)>>;

/// Files grouped by directory, every ancestor directory present (the root as `""`), both
/// levels in byte order: the order apk expects DATA blocks in.
fn tree(files: &[(String, Vec<u8>, u32)]) -> Result<Tree<'_>, String> {
    let mut tree: Tree = BTreeMap::new();
    tree.insert(String::new(), Vec::new());
    let mut seen = BTreeSet::new();
    for (path, data, mode) in files {
        let bad = path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad || *mode > 0o7777 {
            return Err(format!("bad package file {path:?} (mode {mode:o})"));
        }
        if !seen.insert(path.as_str()) {
            return Err(format!("{path} given twice"));
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut ancestor = dir;
        while !ancestor.is_empty() {
            tree.entry(ancestor.to_owned()).or_default();
            ancestor = ancestor.rsplit_once('/').map_or("", |(a, _)| a);
        }
        tree.get_mut(dir)
            .expect("inserted above")
            .push((name, data, *mode));
    }
    if tree.keys().any(|d| seen.contains(d.as_str())) {
        return Err("a path is both a file and a directory".into());
    }
    for entries in tree.values_mut() {
        entries.sort_by(|a, b| a.0.cmp(b.0));
    }
    Ok(tree)
}

fn acl(adb: &mut AdbWriter, mode: u32) -> u32 {
    let mut acl = [NULL; ACL_GROUP + 1];
    acl[ACL_MODE] = adb.int(mode.into());
    acl[ACL_USER] = adb.blob(b"root");
    acl[ACL_GROUP] = adb.blob(b"root");
    adb.object(&acl)
}

/// A dependency array: one {name, version, match} object per dependency, sorted by name as
/// apk sorts it (by version too for equal names, which apk compares as versions: rare enough).
fn dep_array(adb: &mut AdbWriter, deps: &[String]) -> Result<u32, String> {
    let mut parsed = Vec::new();
    for spec in deps {
        parsed.push(parse_dep(spec).ok_or_else(|| format!("bad dependency {spec:?}"))?);
    }
    let mut items = vec![NULL];
    let mut sorted = Vec::new();
    for (name, version, op) in &parsed {
        let mut dep = [NULL; DEP_MATCH + 1];
        dep[DEP_NAME] = adb.blob(name.as_bytes());
        if *op != V_ANY {
            dep[DEP_VERSION] = adb.blob(version.as_bytes());
            if *op != V_EQUAL {
                dep[DEP_MATCH] = adb.int((*op).into());
            }
        }
        sorted.push(((name, version, op), adb.object(&dep)));
    }
    sorted.sort();
    sorted.dedup_by_key(|s| s.1);
    items.extend(sorted.into_iter().map(|s| s.1));
    Ok(adb.object(&items))
}

/// `[!]name[op version]` into (name, version, match bits).
fn parse_dep(spec: &str) -> Option<(&str, &str, u32)> {
    let (conflict, spec) = match spec.strip_prefix('!') {
        Some(rest) => (V_CONFLICT, rest),
        None => (0, spec),
    };
    let op_at = spec.find(['<', '>', '=', '~']).unwrap_or(spec.len());
    let (name, rest) = spec.split_at(op_at);
    let ver_at = rest.find(|c| !"<>=~".contains(c)).unwrap_or(rest.len());
    let (op, version) = rest.split_at(ver_at);
    let mut bits = 0;
    for c in op.chars() {
        bits |= match c {
            '<' => V_LESS,
            '>' => V_GREATER,
            '=' => V_EQUAL,
            _ => V_FUZZY | V_EQUAL,
        };
    }
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-:/[],".contains(c));
    match (op.is_empty(), version.is_empty()) {
        (true, true) if name_ok => Some((name, "", conflict | V_ANY)),
        (false, false) if name_ok && valid_version(version) => {
            Some((name, version, conflict | bits))
        }
        _ => None,
    }
}

/// apk's name rule (doc/apk-package.5): `[a-zA-Z0-9._+-]`, starting alphanumeric.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// apk's version rule (doc/apk-package.5):
/// `number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}`.
fn valid_version(v: &str) -> bool {
    fn digits(s: &str) -> (usize, &str) {
        let n = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        (n, &s[n..])
    }
    let (n, mut s) = digits(v);
    if n == 0 {
        return false;
    }
    while let Some(rest) = s.strip_prefix('.') {
        let (n, rest) = digits(rest);
        if n == 0 {
            return false;
        }
        s = rest;
    }
    if s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s = &s[1..];
    }
    while let Some(rest) = s.strip_prefix('_') {
        let Some(suffix) = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]
            .iter()
            .find(|x| rest.starts_with(**x) && !rest[x.len()..].starts_with(char::is_alphabetic))
        else {
            return false;
        };
        s = digits(&rest[suffix.len()..]).1;
    }
    if let Some(rest) = s.strip_prefix('~') {
        let n = rest
            .find(|c: char| !matches!(c, '0'..='9' | 'a'..='f'))
            .unwrap_or(rest.len());
        if n == 0 {
            return false;
        }
        s = &rest[n..];
    }
    if let Some(rest) = s.strip_prefix("-r") {
        let (n, rest) = digits(rest);
        if n == 0 {
            return false;
        }
        s = rest;
    }
    s.is_empty()
}

/// One block: tag, parts, zero padding to the 8-byte block alignment.
fn push_block(out: &mut Vec<u8>, kind: u32, parts: &[&[u8]]) -> Result<(), String> {
    let len: usize = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    if len > 0x3fff_ffff {
        return Err(format!("block of {len} bytes: too big for this writer"));
    }
    out.extend_from_slice(&((kind << 30) | len as u32).to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out.resize(out.len().next_multiple_of(BLOCK_ALIGN), 0);
    Ok(())
}

/// Builds the ADB block. Like apk, identical data (strings, ACLs, mtimes) is stored once.
struct AdbWriter {
    buf: Vec<u8>,
    seen: HashMap<Vec<u8>, usize>,
}

impl AdbWriter {
    fn new() -> Self {
        AdbWriter {
            buf: vec![0; ADB_HEADER_LEN],
            seen: HashMap::new(),
        }
    }

    fn raw(&mut self, bytes: Vec<u8>, align: usize, cache: bool) -> usize {
        // Like apk, a copy at an offset the new value cannot use is not shared.
        if let Some(&at) = self
            .seen
            .get(&bytes)
            .filter(|&&at| cache && at % align == 0)
        {
            return at;
        }
        self.buf.resize(self.buf.len().next_multiple_of(align), 0);
        let at = self.buf.len();
        self.buf.extend_from_slice(&bytes);
        if cache {
            self.seen.insert(bytes, at);
        }
        at
    }

    fn val(kind: u32, at: usize) -> u32 {
        // Offsets past 28 bits are caught once, in `finish`.
        (kind << 28) | (at as u32 & VALUE_MASK)
    }

    /// Length-prefixed, with the smallest prefix that fits; empty is NULL.
    fn blob(&mut self, b: &[u8]) -> u32 {
        self.blob_with(b, true).0
    }

    /// A blob never shared with another value, so it can be patched: (value, data offset).
    fn blob_uncached(&mut self, b: &[u8]) -> (u32, usize) {
        self.blob_with(b, false)
    }

    fn blob_with(&mut self, b: &[u8], cache: bool) -> (u32, usize) {
        let (kind, mut bytes) = match b.len() {
            0 => return (NULL, 0),
            1..=0xff => (T_BLOB8, vec![b.len() as u8]),
            0x100..=0xffff => (T_BLOB16, (b.len() as u16).to_le_bytes().to_vec()),
            _ => (T_BLOB32, (b.len() as u32).to_le_bytes().to_vec()),
        };
        let prefix = bytes.len();
        bytes.extend_from_slice(b);
        let at = self.raw(bytes, prefix, cache);
        (Self::val(kind, at), at + prefix)
    }

    fn int(&mut self, v: u64) -> u32 {
        if v <= u64::from(VALUE_MASK) {
            Self::val(T_INT, v as usize)
        } else if let Ok(v) = u32::try_from(v) {
            let at = self.raw(v.to_le_bytes().to_vec(), 4, true);
            Self::val(T_INT32, at)
        } else {
            let at = self.raw(v.to_le_bytes().to_vec(), 4, true);
            Self::val(T_INT64, at)
        }
    }

    /// `slots[0]` is ignored (it becomes the count); trailing NULLs are dropped and an object
    /// with nothing set is NULL. mkpkg tags arrays as objects too; readers accept both.
    fn object(&mut self, slots: &[u32]) -> u32 {
        let n = slots.iter().rposition(|&v| v != NULL).map_or(1, |i| i + 1);
        if n <= 1 {
            return NULL;
        }
        let mut bytes = (n as u32).to_le_bytes().to_vec();
        for v in &slots[1..n] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let at = self.raw(bytes, 4, true);
        Self::val(T_OBJECT, at)
    }

    fn finish(mut self, root: u32) -> Result<Vec<u8>, String> {
        if self.buf.len() > VALUE_MASK as usize {
            return Err("package metadata over 256 MiB".into());
        }
        self.buf[4..8].copy_from_slice(&root.to_le_bytes());
        Ok(self.buf)
    }
}

/// Reads a package as apk would, without the writer's structures: decompresses, walks the
/// blocks, decodes the metadata and hashes every file's data against its stored digest.
/// Structural problems are errors; digest mismatches are reported per file (see
/// [`ApkSummary::verify`]).
pub fn check_apk(path: &Path) -> Result<ApkSummary, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(bytes: &[u8]) -> Result<ApkSummary, String> {
    let (compression, plain) = decompress(bytes)?;
    let body = plain
        .strip_prefix(MAGIC_PLAIN.as_slice())
        .ok_or("no ADB. header after decompression")?;
    let schema = body.get(..4).ok_or("truncated: no schema")?;
    if schema != SCHEMA_PACKAGE {
        return Err(format!(
            "schema {:?}, not a package (pckg)",
            String::from_utf8_lossy(schema)
        ));
    }
    let mut blocks = Blocks { rest: &body[4..] };
    let (kind, adb) = blocks.next_block()?.ok_or("truncated: no ADB block")?;
    if kind != BLOCK_ADB {
        return Err(format!("first block has type {kind}, not ADB"));
    }
    if adb.len() < ADB_HEADER_LEN || adb[0] != 0 {
        return Err("ADB block too short or of an unknown compat version".into());
    }
    let view = AdbReader { adb };
    let (mut summary, indexes) = read_metadata(&view, compression)?;

    // The file each DATA block must carry, in order: non-empty files, directory by directory.
    let mut expected = summary
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.size > 0)
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .into_iter();
    let mut seen_data = false;
    while let Some((kind, payload)) = blocks.next_block()? {
        match kind {
            BLOCK_SIG if !seen_data => summary.signed = true,
            BLOCK_DATA => {
                seen_data = true;
                let i = expected
                    .next()
                    .ok_or("a DATA block for no file (or an empty one)")?;
                let head = payload.get(..8).ok_or("DATA block without its header")?;
                let got = (le32(head, 0)?, le32(head, 4)?);
                let file = &mut summary.files[i];
                if got != indexes[i] {
                    return Err(format!(
                        "DATA block for path/file {got:?}, expected {:?} ({})",
                        indexes[i], file.path
                    ));
                }
                file.data = payload[8..].to_vec();
                file.digest_ok = file.data.len() as u64 == file.size
                    && hex(&Sha256::digest(&file.data)) == file.sha256;
            }
            _ => return Err(format!("unexpected block type {kind}")),
        }
    }
    if let Some(i) = expected.next() {
        return Err(format!(
            "no data for {} (truncated package?)",
            summary.files[i].path
        ));
    }
    for f in summary.files.iter_mut().filter(|f| f.size == 0) {
        f.digest_ok = f.sha256 == hex(&Sha256::digest(b""));
    }
    Ok(summary)
}

fn decompress(bytes: &[u8]) -> Result<(&'static str, Vec<u8>), String> {
    let magic = bytes.get(..4).ok_or("truncated: shorter than its magic")?;
    let inflate = |data: &[u8]| {
        let mut plain = Vec::new();
        DeflateDecoder::new(data)
            .read_to_end(&mut plain)
            .map_err(|e| format!("corrupt deflate stream: {e}"))?;
        Ok::<_, String>(("deflate", plain))
    };
    if magic == MAGIC_PLAIN {
        Ok(("none", bytes.to_vec()))
    } else if magic == MAGIC_DEFLATE {
        inflate(&bytes[4..])
    } else if magic == MAGIC_COMPRESSED {
        match bytes.get(4..6) {
            Some([1, _]) => inflate(&bytes[6..]),
            Some([0, _]) => Ok(("none", bytes[6..].to_vec())),
            Some([alg, _]) => Err(format!("compression algorithm {alg} not supported")),
            _ => Err("truncated compression header".into()),
        }
    } else {
        Err(format!("not an apk v3 package (magic {magic:02x?})"))
    }
}

struct Blocks<'a> {
    rest: &'a [u8],
}

impl<'a> Blocks<'a> {
    /// The next (type, payload), or None at a clean end.
    fn next_block(&mut self) -> Result<Option<(u32, &'a [u8])>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let tag = le32(self.rest, 0).map_err(|_| "truncated block header")?;
        let (kind, header, raw) = if tag >> 30 == BLOCK_EXT {
            let size = self
                .rest
                .get(8..16)
                .ok_or("truncated extended block header")?;
            let size = u64::from_le_bytes(size.try_into().expect("8 bytes"));
            (tag & 0x3fff_ffff, 16, size)
        } else {
            (tag >> 30, 4, u64::from(tag & 0x3fff_ffff))
        };
        if raw < header {
            return Err(format!("block size {raw} below its header"));
        }
        let padded = raw.next_multiple_of(BLOCK_ALIGN as u64);
        if padded > self.rest.len() as u64 {
            return Err(format!(
                "truncated: a block of {padded} bytes with {} left",
                self.rest.len()
            ));
        }
        let payload = &self.rest[header as usize..raw as usize];
        self.rest = &self.rest[padded as usize..];
        Ok(Some((kind, payload)))
    }
}

struct AdbReader<'a> {
    adb: &'a [u8],
}

impl AdbReader<'_> {
    fn root(&self) -> Result<u32, String> {
        le32(self.adb, 4)
    }

    fn at(&self, v: u32, len: usize) -> Result<&[u8], String> {
        let at = (v & VALUE_MASK) as usize;
        self.adb
            .get(at..at + len)
            .ok_or_else(|| format!("value {v:#010x} points past the ADB block"))
    }

    /// NULL or absent is None.
    fn blob(&self, v: u32) -> Result<Option<&[u8]>, String> {
        let (prefix, len) = match v >> 28 {
            T_SPECIAL => return Ok(None),
            T_BLOB8 => (1, self.at(v, 1)?[0] as usize),
            T_BLOB16 => (
                2,
                u16::from_le_bytes(self.at(v, 2)?.try_into().expect("2")) as usize,
            ),
            T_BLOB32 => (4, le32(self.at(v, 4)?, 0)? as usize),
            t => return Err(format!("type {t:#x} where a blob belongs")),
        };
        Ok(Some(&self.at(v, prefix + len)?[prefix..]))
    }

    fn string(&self, v: u32) -> Result<Option<String>, String> {
        Ok(self
            .blob(v)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    fn int(&self, v: u32) -> Result<u64, String> {
        match v >> 28 {
            T_SPECIAL => Ok(0),
            T_INT => Ok(u64::from(v & VALUE_MASK)),
            T_INT32 => Ok(u64::from(le32(self.at(v, 4)?, 0)?)),
            T_INT64 => Ok(u64::from_le_bytes(
                self.at(v, 8)?.try_into().expect("8 bytes"),
            )),
            t => Err(format!("type {t:#x} where an integer belongs")),
        }
    }

    /// Slots of an object or array, slot 0 included; NULL gives just the count slot.
    fn slots(&self, v: u32) -> Result<Vec<u32>, String> {
        match v >> 28 {
            T_SPECIAL => Ok(vec![1]),
            T_ARRAY | T_OBJECT => {
                let n = le32(self.at(v, 4)?, 0)? as usize;
                if n == 0 {
                    return Err("an object with no slots".into());
                }
                let raw = self.at(v, 4 * n)?;
                (0..n).map(|i| le32(raw, 4 * i)).collect()
            }
            t => Err(format!("type {t:#x} where an object belongs")),
        }
    }

    /// Array items (slots after the count).
    fn items(&self, v: u32) -> Result<Vec<u32>, String> {
        Ok(self.slots(v)?.split_off(1))
    }
}

fn slot(slots: &[u32], i: usize) -> u32 {
    slots.get(i).copied().unwrap_or(NULL)
}

/// The summary (without file data) and, for each file, the (1-based) directory and file index
/// its DATA block header must name.
fn read_metadata(
    r: &AdbReader,
    compression: &'static str,
) -> Result<(ApkSummary, Vec<(u32, u32)>), String> {
    let pkg = r.slots(r.root()?)?;
    let info = r.slots(slot(&pkg, PKG_INFO))?;
    let text = |i: usize| -> Result<Option<String>, String> { r.string(slot(&info, i)) };
    let required = |i: usize, what: &str| -> Result<String, String> {
        text(i)?.ok_or_else(|| format!("no {what} in the package info"))
    };

    let (mut dirs, mut files, mut indexes) = (Vec::new(), Vec::new(), Vec::new());
    for (dir_no, dir) in r.items(slot(&pkg, PKG_PATHS))?.into_iter().enumerate() {
        let d = r.slots(dir)?;
        let path = r.string(slot(&d, DI_NAME))?.unwrap_or_default();
        let (mode, user, group) = read_acl(r, slot(&d, DI_ACL))?;
        for (file_no, file) in r.items(slot(&d, DI_FILES))?.into_iter().enumerate() {
            let f = r.slots(file)?;
            let name = r.string(slot(&f, FI_NAME))?.ok_or("a file without name")?;
            if slot(&f, FI_TARGET) != NULL {
                return Err(format!(
                    "{path}/{name}: links and devices are not checked here"
                ));
            }
            let (mode, user, group) = read_acl(r, slot(&f, FI_ACL))?;
            files.push(ApkFile {
                path: if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                },
                mode,
                user,
                group,
                size: r.int(slot(&f, FI_SIZE))?,
                mtime: r.int(slot(&f, FI_MTIME))?,
                sha256: r.blob(slot(&f, FI_HASH))?.map(hex).unwrap_or_default(),
                digest_ok: false,
                data: Vec::new(),
            });
            indexes.push((dir_no as u32 + 1, file_no as u32 + 1));
        }
        dirs.push(ApkDir {
            path,
            mode,
            user,
            group,
        });
    }

    let script_slots = r.slots(slot(&pkg, PKG_SCRIPTS))?;
    let mut scripts = BTreeMap::new();
    for (i, name) in SCRIPTS.iter().enumerate() {
        if let Some(text) = r.string(slot(&script_slots, i + 1))? {
            scripts.insert((*name).to_owned(), text);
        }
    }

    let summary = ApkSummary {
        compression,
        signed: false,
        name: required(PI_NAME, "name")?,
        version: required(PI_VERSION, "version")?,
        arch: required(PI_ARCH, "arch")?,
        description: text(PI_DESCRIPTION)?.unwrap_or_default(),
        license: text(PI_LICENSE)?.unwrap_or_default(),
        url: text(PI_URL)?,
        maintainer: text(PI_MAINTAINER)?,
        origin: text(PI_ORIGIN)?,
        depends: read_deps(r, slot(&info, PI_DEPENDS))?,
        provides: read_deps(r, slot(&info, PI_PROVIDES))?,
        installed_size: r.int(slot(&info, PI_INSTALLED_SIZE))?,
        identity_ok: identity_ok(r, slot(&info, PI_HASHES))?,
        dirs,
        files,
        scripts,
    };
    Ok((summary, indexes))
}

/// A dependency array (depends, provides) back in the `[!]name[op version]` form.
fn read_deps(r: &AdbReader, v: u32) -> Result<Vec<String>, String> {
    let mut deps = Vec::new();
    for dep in r.items(v)? {
        let d = r.slots(dep)?;
        let name = r
            .string(slot(&d, DEP_NAME))?
            .ok_or("a dependency without name")?;
        let version = r.string(slot(&d, DEP_VERSION))?;
        let mut op = r.int(slot(&d, DEP_MATCH))? as u32;
        if op == 0 {
            op = if version.is_some() { V_EQUAL } else { V_ANY };
        }
        let bang = if op & V_CONFLICT != 0 { "!" } else { "" };
        let op_str = match op & !V_CONFLICT {
            V_ANY => "",
            V_LESS => "<",
            x if x == V_LESS | V_EQUAL => "<=",
            x if x == V_LESS | V_EQUAL | V_FUZZY => "<~",
            x if x == V_EQUAL | V_FUZZY || x == V_FUZZY => "~",
            V_EQUAL => "=",
            x if x == V_GREATER | V_EQUAL => ">=",
            x if x == V_GREATER | V_EQUAL | V_FUZZY => ">~",
            V_GREATER => ">",
            x if x == V_LESS | V_GREATER => "><",
            _ => "?",
        };
        deps.push(format!(
            "{bang}{name}{op_str}{}",
            version.unwrap_or_default()
        ));
    }
    Ok(deps)
}

fn read_acl(r: &AdbReader, v: u32) -> Result<(u32, String, String), String> {
    let acl = r.slots(v)?;
    let mode = u32::try_from(r.int(slot(&acl, ACL_MODE))?).map_err(|_| "mode out of range")?;
    let user = r.string(slot(&acl, ACL_USER))?.unwrap_or_default();
    let group = r.string(slot(&acl, ACL_GROUP))?.unwrap_or_default();
    Ok((mode, user, group))
}

/// mkpkg stores the first bytes of the SHA-256 of the ADB block, taken with them zeroed.
fn identity_ok(r: &AdbReader, v: u32) -> Result<bool, String> {
    let Some(stored) = r.blob(v)? else {
        return Ok(false);
    };
    let at = (v & VALUE_MASK) as usize + 1;
    if v >> 28 != T_BLOB8 || stored.len() != IDENTITY_LEN {
        return Ok(false);
    }
    let mut block = r.adb.to_vec();
    block[at..at + IDENTITY_LEN].fill(0);
    Ok(Sha256::digest(&block)[..IDENTITY_LEN] == *stored)
}

fn le32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|x| u32::from_le_bytes(x.try_into().expect("4 bytes")))
        .ok_or_else(|| "truncated value".into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mkpkg-reference.apk"
    );
    const HELLO: &[u8] = b"#!/bin/sh\necho hello from the reference package\n";
    const DEMO_CONFIG: &[u8] = b"config demo 'main'\n\toption enabled '1'\n";

    /// The input `tests/data/README.md` gives `apk mkpkg` for the reference package.
    fn reference_input() -> (ApkMeta, Vec<(String, Vec<u8>, u32)>) {
        let meta = ApkMeta {
            name: "demo".into(),
            version: "1.0.0-r1".into(),
            arch: "aarch64_cortex-a53".into(),
            description: "Reference package for probegate's apk checker".into(),
            license: "Apache-2.0".into(),
            url: Some("https://example.invalid/demo".into()),
            maintainer: None,
            depends: vec!["libc".into(), "busybox>=1.36".into()],
            provides: Vec::new(),
            conffiles: vec!["/etc/config/demo".into()],
            mtime: 1_700_000_000,
        };
        let files = vec![
            ("usr/bin/hello".into(), HELLO.to_vec(), 0o755),
            ("etc/config/demo".into(), DEMO_CONFIG.to_vec(), 0o600),
        ];
        (meta, files)
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-apk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn reads_the_mkpkg_reference() {
        let s = check_apk(Path::new(REFERENCE)).unwrap();
        s.verify().unwrap();
        assert_eq!(s.compression, "deflate");
        assert!(!s.signed);
        assert_eq!(
            (s.name.as_str(), s.version.as_str(), s.arch.as_str()),
            ("demo", "1.0.0-r1", "aarch64_cortex-a53")
        );
        assert_eq!(
            s.description,
            "Reference package for probegate's apk checker"
        );
        assert_eq!(s.license, "Apache-2.0");
        assert_eq!(s.url.as_deref(), Some("https://example.invalid/demo"));
        assert_eq!(s.depends, ["busybox>=1.36", "libc"]);
        assert_eq!(s.installed_size, (HELLO.len() + DEMO_CONFIG.len()) as u64);
        let dirs: Vec<(&str, u32)> = s.dirs.iter().map(|d| (d.path.as_str(), d.mode)).collect();
        assert_eq!(
            dirs,
            [
                ("", 0o755),
                ("etc", 0o755),
                ("etc/config", 0o755),
                ("usr", 0o755),
                ("usr/bin", 0o755)
            ]
        );
        let files: Vec<(&str, u32, u64)> = s
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.size))
            .collect();
        assert_eq!(
            files,
            [
                ("etc/config/demo", 0o600, DEMO_CONFIG.len() as u64),
                ("usr/bin/hello", 0o755, HELLO.len() as u64)
            ]
        );
        let hello = s.file("usr/bin/hello").unwrap();
        assert_eq!(hello.data, HELLO);
        // As `apk adbdump` shows it.
        assert_eq!(
            hello.sha256,
            "b05fb4a46736ad3a746e71931e4352ffacf43d761d9041fcd51b3459ae2ecc8e"
        );
        assert!(
            s.files
                .iter()
                .all(|f| f.user == "root" && f.group == "root")
        );
        assert!(s.files.iter().all(|f| f.mtime == 1_700_000_000));
        assert_eq!(
            s.scripts.keys().collect::<Vec<_>>(),
            ["post-install"],
            "{:?}",
            s.scripts
        );
        assert!(s.scripts["post-install"].starts_with("#!/bin/sh\n"));
    }

    /// Same input as mkpkg had (without the OpenWrt bookkeeping files, which mkpkg does not
    /// add): the same bytes before compression, the package identity hash included.
    #[test]
    fn writes_what_mkpkg_writes() {
        let (meta, files) = reference_input();
        let script = "#!/bin/sh\necho installed demo\n";
        let ours = package_bytes(&meta, &files, &[("post-install", script)]).unwrap();
        let (_, theirs) = decompress(&fs::read(REFERENCE).unwrap()).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn round_trip() {
        let (mut meta, mut files) = reference_input();
        meta.name = "probegate".into();
        meta.version = "0.2.0-r1".into();
        meta.maintainer = Some("Someone <someone@example.invalid>".into());
        meta.depends.push("!probegate-full".into());
        meta.provides = vec!["footfall=0.2.0-r1".into()];
        files.extend([
            (
                "etc/init.d/probegate".into(),
                b"#!/bin/sh /etc/rc.common\n".to_vec(),
                0o755,
            ),
            ("usr/lib/probegate/empty".into(), Vec::new(), 0o644),
            // Large enough for 16-bit lengths and several deflate blocks.
            (
                "usr/lib/probegate/big.bin".into(),
                (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect(),
                0o644,
            ),
        ]);
        let scripts = openwrt_scripts(&meta.name);
        let script_refs: Vec<(&str, &str)> =
            scripts.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let out = temp("probegate-0.2.0-r1.apk");
        write_apk(&meta, &files, &script_refs, &out).unwrap();
        let s = check_apk(&out).unwrap();
        s.verify().unwrap();

        assert_eq!(
            (s.name.as_str(), s.version.as_str()),
            ("probegate", "0.2.0-r1")
        );
        assert_eq!(s.maintainer, meta.maintainer);
        assert_eq!(s.depends, ["busybox>=1.36", "libc", "!probegate-full"]);
        assert_eq!(s.provides, ["footfall=0.2.0-r1"]);
        for (path, data, mode) in &files {
            let f = s.file(path).unwrap_or_else(|| panic!("{path} missing"));
            assert_eq!(
                (&f.data, f.mode, f.size),
                (data, *mode, data.len() as u64),
                "{path}"
            );
        }
        let list = &s.file("lib/apk/packages/probegate.list").unwrap().data;
        assert_eq!(
            String::from_utf8_lossy(list),
            "/etc/config/demo\n/etc/init.d/probegate\n/usr/bin/hello\n\
             /usr/lib/probegate/big.bin\n/usr/lib/probegate/empty\n"
        );
        let conffiles = &s.file("lib/apk/packages/probegate.conffiles").unwrap().data;
        assert_eq!(conffiles, b"/etc/config/demo\n");
        let sums = &s
            .file("lib/apk/packages/probegate.conffiles_static")
            .unwrap()
            .data;
        let want = format!("/etc/config/demo {}\n", hex(&Sha256::digest(DEMO_CONFIG)));
        assert_eq!(String::from_utf8_lossy(sums), want);
        let total: usize = s.files.iter().map(|f| f.data.len()).sum();
        assert_eq!(s.installed_size, total as u64);

        let dirs: Vec<&str> = s.dirs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "",
                "etc",
                "etc/config",
                "etc/init.d",
                "lib",
                "lib/apk",
                "lib/apk/packages",
                "usr",
                "usr/bin",
                "usr/lib",
                "usr/lib/probegate"
            ]
        );
        assert!(s.dirs.iter().all(|d| d.mode == 0o755 && d.user == "root"));
        assert_eq!(
            s.scripts.keys().collect::<Vec<_>>(),
            ["post-install", "post-upgrade", "pre-deinstall"]
        );
        assert!(s.scripts["post-install"].contains("default_postinst\n"));
        assert!(s.scripts["pre-deinstall"].contains("export pkgname=\"probegate\"\n"));
        assert!(s.scripts["post-upgrade"].starts_with("#!/bin/sh\nexport PKG_UPGRADE=1\n["));
    }

    #[test]
    fn catches_a_corrupted_file() {
        let (meta, files) = reference_input();
        let mut raw = package_bytes(&meta, &files, &[]).unwrap();
        let at = raw.windows(5).position(|w| w == b"hello").unwrap();
        // The first "hello" is the file's name in the metadata; corrupt the data.
        let at = at
            + 5
            + raw[at + 5..]
                .windows(5)
                .position(|w| w == b"hello")
                .unwrap();
        raw[at] ^= 0x20;
        let s = parse(&raw).unwrap();
        assert!(!s.file("usr/bin/hello").unwrap().digest_ok);
        assert!(s.file("etc/config/demo").unwrap().digest_ok);
        let err = s.verify().unwrap_err();
        assert!(err.contains("usr/bin/hello"), "{err}");
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let bytes = fs::read(REFERENCE).unwrap();
        for len in [0, 3, 4, 10, bytes.len() / 2, bytes.len() - 1] {
            let out = temp(&format!("cut-{len}.apk"));
            fs::write(&out, &bytes[..len]).unwrap();
            let err = check_apk(&out).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("deflate") || err.contains("no data"),
                "{len}: {err}"
            );
        }
        // Uncompressed, cut at every length: never a panic, always a message.
        let (meta, files) = reference_input();
        let raw = package_bytes(&meta, &files, &[]).unwrap();
        for len in 0..raw.len() {
            assert!(parse(&raw[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let (mut meta, files) = reference_input();
        let out = temp("bad.apk");
        meta.version = "0.2.0-1".into();
        let err = write_apk(&meta, &files, &[], &out).unwrap_err();
        assert!(err.contains("invalid apk version"), "{err}");
        meta.version = "0.2.0-r1".into();
        let err = write_apk(&meta, &files, &[("postinst", "")], &out).unwrap_err();
        assert!(err.contains("unknown apk script"), "{err}");
        let slash = [("/usr/bin/x".to_owned(), vec![1], 0o755)];
        assert!(write_apk(&meta, &slash, &[], &out).is_err());
    }

    #[test]
    fn versions() {
        for ok in ["1", "0.2.0-r1", "1.2.3a_rc1_p2~0a1f-r10", "25.12.0_rc1"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in [
            "",
            "0.2.0-1",
            "v1",
            "1..2",
            "1.2-r",
            "1_foo",
            "1~",
            "1.2.3-r1-r2",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }
}
