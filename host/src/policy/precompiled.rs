//! A cache of compiled policy components on disk, so that loading a policy again skips
//! Cranelift: an 18 MB Python component takes seconds to compile and milliseconds to load
//! precompiled.
//!
//! An entry is named after what determines the machine code: the SHA-256 of the component's
//! bytes and the engine's [`Engine::precompile_compatibility_hash`] (wasmtime's version, the
//! compiler settings, the enabled features). A changed component or engine simply misses. Entries
//! are written to a temporary file in the same folder and renamed into place, so a reader never
//! sees a partial one, and two hosts filling the cache at once both end with a whole entry.
//!
//! The folder is bounded: after writing an entry, the least recently used ones go until the
//! entries take at most [`MAX_BYTES`] (a hit refreshes its entry's modification time).

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// The environment variable naming the cache folder when the builder names none.
pub const ENV: &str = "CACHELET_COMPILE_CACHE";

/// Most bytes the entries of one folder may take: a compiled Python or JavaScript policy is
/// ~35 MB, so this keeps the last few dozen versions.
pub(crate) const MAX_BYTES: u64 = 2 << 30;

/// The folder named by [`ENV`], if set and not empty.
pub(crate) fn dir_from_env() -> Option<PathBuf> {
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Compiles `bytes`, or loads the machine code this host compiled for them earlier from
/// `dir`. Returns the component and whether it came from the cache. Problems with the cache
/// (an unwritable folder, an entry of another build) are logged and cost only the compile.
pub(crate) fn component(
    engine: &Engine,
    bytes: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, bool)> {
    let Some(dir) = dir else {
        return Ok((Component::from_binary(engine, bytes)?, false));
    };
    let path = dir.join(entry_name(engine, bytes));
    if path.is_file() {
        // SAFETY: `deserialize_file` runs the file's machine code, so it must be what
        // `Component::serialize` wrote, unmodified. The file is one this host wrote: it is named
        // after the SHA-256 of the component's bytes and this engine's compatibility hash, in a
        // folder that the operator gave cachelet for this cache alone (like any code cache, it
        // must be writable only by the host's user), and it appears only complete (written to a
        // temporary file, then renamed). wasmtime checks its header and the engine
        // compatibility again and refuses a mismatch, which falls back to compiling below.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                // Recently used: pruning keeps it.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                return Ok((c, true));
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                "precompiled policy unusable, compiling again: {e:#}"
            ),
        }
    }
    let component = Component::from_binary(engine, bytes)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(
            dir = %dir.display(),
            "cannot write the precompiled policy cache: {e:#}"
        );
    }
    prune(dir, MAX_BYTES);
    Ok((component, false))
}

/// Removes the least recently used entries until the rest take at most `max_bytes`.
fn prune(dir: &Path, max_bytes: u64) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = read
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            if path.extension()? != "cwasm" {
                return None;
            }
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0)); // newest first
    let mut kept = 0u64;
    for (_, len, path) in entries {
        kept += len;
        if kept > max_bytes {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `{sha256 of the component}-{engine compatibility hash}.cwasm`.
fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let hex = crate::digest::hex_sha256(bytes);
    format!("{hex}-{:016x}.cwasm", h.finish())
}

fn store(component: &Component, dir: &Path, path: &Path) -> wasmtime::Result<()> {
    let code = component.serialize()?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&code)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component with nothing in it, in the text format.
    const EMPTY: &str = "(component)";

    #[test]
    fn a_second_load_comes_from_the_cache_and_a_changed_component_misses() {
        let engine = &super::super::runtime::runtime().engine;
        let dir = std::env::temp_dir().join(format!("cachelet-precompiled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = wat_bytes(EMPTY);
        let (_, cached) = component(engine, &bytes, Some(&dir)).unwrap();
        assert!(!cached, "an empty cache compiles");
        let (_, cached) = component(engine, &bytes, Some(&dir)).unwrap();
        assert!(cached, "the second load is precompiled");
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary file left");

        // A corrupt entry is compiled again and replaced.
        let entry = entries[0].as_ref().unwrap().path();
        std::fs::write(&entry, b"junk").unwrap();
        let (_, cached) = component(engine, &bytes, Some(&dir)).unwrap();
        assert!(!cached);
        assert!(component(engine, &bytes, Some(&dir)).unwrap().1);

        let other = wat_bytes("(component (core module))");
        assert!(!component(engine, &other, Some(&dir)).unwrap().1);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pruning_keeps_the_most_recently_used_entries() {
        let dir = std::env::temp_dir().join(format!("cachelet-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let now = std::time::SystemTime::now();
        for (i, name) in ["old.cwasm", "mid.cwasm", "new.cwasm"].iter().enumerate() {
            let path = dir.join(name);
            std::fs::write(&path, [0u8; 100]).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(now - std::time::Duration::from_secs(100 - 10 * i as u64))
                .unwrap();
        }
        std::fs::write(dir.join("other.txt"), [0u8; 1000]).unwrap();
        prune(&dir, 250);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["mid.cwasm", "new.cwasm", "other.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The binary of a tiny component (hand-assembled: the host has no text parser).
    fn wat_bytes(text: &str) -> Vec<u8> {
        match text {
            // `(component)`: the preamble of a component, version 0xd, layer 1.
            EMPTY => b"\0asm\x0d\0\x01\0".to_vec(),
            // `(component (core module))`: a core module section (1) holding an empty module.
            _ => {
                let module = b"\0asm\x01\0\0\0";
                let mut v = b"\0asm\x0d\0\x01\0".to_vec();
                v.push(1);
                v.push(module.len() as u8);
                v.extend_from_slice(module);
                v
            }
        }
    }
}
