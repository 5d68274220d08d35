//! Which scripts a list of paths names: files as given, directories
//! searched (recursively) for `.test` files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;

/// The scripts `paths` names, in order: each file as given, and for each
/// directory the `.test` files under it, sorted by path. A path given twice
/// runs twice.
///
/// A missing path, or a directory without any `.test` file, is an error
/// naming it.
pub fn find_scripts(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut scripts = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::Missing { path: path.clone() }
            } else {
                Error::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            collect(path, &mut found)?;
            if found.is_empty() {
                return Err(Error::NoScripts { path: path.clone() });
            }
            found.sort();
            scripts.extend(found);
        } else {
            scripts.push(path.clone());
        }
    }
    Ok(scripts)
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            collect(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "test") {
            found.push(path);
        }
    }
    Ok(())
}
