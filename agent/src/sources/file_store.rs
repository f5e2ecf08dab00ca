//! Sealed sources in files, for machines with no keyring (headless, WSL, a container):
//! `<state_dir>/sources/<hex of the name>`, mode 0600 in a 0700 directory, written atomically.
//! Only sealed sources are kept here: the file holds the same ciphertext a keyring entry would,
//! so a copy of the disk gives no more than a copy of the keyring.

use std::io;
use std::path::{Path, PathBuf};

use super::error::{Backend, SourceError};

fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(hex::encode(name.as_bytes()))
}

fn io_error(path: &Path, source: io::Error) -> SourceError {
    SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes source `name`'s payload.
pub(super) fn write(dir: &Path, name: &str, payload: &str) -> Result<(), SourceError> {
    crate::util::create_private_dir(dir).map_err(|e| io_error(dir, e))?;
    let path = path_of(dir, name);
    crate::util::write_atomic(&path, payload.as_bytes(), 0o600).map_err(|e| io_error(&path, e))
}

/// Reads source `name`'s payload.
pub(super) fn read(dir: &Path, name: &str) -> Result<Vec<u8>, SourceError> {
    let path = path_of(dir, name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SourceError::NotFound {
            backend: Backend::File,
            name: name.to_owned(),
        }),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Removes source `name`.
pub(super) fn delete(dir: &Path, name: &str) -> Result<(), SourceError> {
    let path = path_of(dir, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SourceError::NotFound {
            backend: Backend::File,
            name: name.to_owned(),
        }),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// The names of the stored sources, sorted (files that are not ours are skipped).
pub(super) fn list(dir: &Path) -> Result<Vec<String>, SourceError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let bytes = hex::decode(e.file_name().to_str()?).ok()?;
            String::from_utf8(bytes).ok()
        })
        .collect();
    names.sort();
    Ok(names)
}
