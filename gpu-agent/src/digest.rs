//! Lists and digests a job's output directory: the digest is defined in
//! [`aitbc_protocol::outputs`] (shared with the CLI, which recomputes it over what it downloads).
//! The walk does not follow symbolic links, takes every regular file, and fails on a non-UTF-8
//! name; symbolic links and special files are neither hashed nor downloadable.

use aitbc_protocol::Hash;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

pub use aitbc_protocol::outputs::{digest_of, OutputFile, OUTPUT_DIGEST_DOMAIN};
/// At most this many files are listed and hashed; more make the digest fail.
pub const MAX_OUTPUT_FILES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("reading output {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("output file name {0:?} is not UTF-8")]
    NonUtf8Name(PathBuf),
    #[error("more than {MAX_OUTPUT_FILES} output files")]
    TooManyFiles,
}

/// SHA-256 of a file's content, streamed.
pub fn sha256_file(path: &Path) -> io::Result<Hash> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Hash(h.finalize().into()))
}

/// Lists the regular files under `dir`, sorted by relative path, with size and SHA-256.
pub fn list_outputs(dir: &Path) -> Result<Vec<OutputFile>, DigestError> {
    let mut files = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut files)?;
    }
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<OutputFile>) -> Result<(), DigestError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DigestError::Io { path, source }
    };
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err(&path))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            if out.len() >= MAX_OUTPUT_FILES {
                return Err(DigestError::TooManyFiles);
            }
            let rel = relative_name(root, &path)?;
            let size = entry.metadata().map_err(io_err(&path))?.len();
            let sha256 = sha256_file(&path).map_err(io_err(&path))?;
            out.push(OutputFile {
                path: rel,
                size,
                sha256,
            });
        }
    }
    Ok(())
}

fn relative_name(root: &Path, path: &Path) -> Result<String, DigestError> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| DigestError::NonUtf8Name(path.to_path_buf()))?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| DigestError::NonUtf8Name(path.to_path_buf()))?,
            ),
            _ => return Err(DigestError::NonUtf8Name(path.to_path_buf())),
        }
    }
    Ok(parts.join("/"))
}

/// Lists and digests `dir` in one go.
pub fn digest_dir(dir: &Path) -> Result<(Vec<OutputFile>, Hash), DigestError> {
    let files = list_outputs(dir)?;
    let d = digest_of(&files);
    Ok((files, d))
}

/// Resolves a client-supplied relative output path inside `dir`, refusing anything that could
/// leave it (absolute paths, `..`, symbolic links) and anything that is not a regular file.
pub fn resolve_output(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel_path = Path::new(rel);
    if rel.is_empty()
        || !rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let mut p = dir.to_path_buf();
    for c in rel_path.components() {
        p.push(c);
        let meta = fs::symlink_metadata(&p).ok()?;
        if meta.file_type().is_symlink() {
            return None;
        }
    }
    fs::symlink_metadata(&p)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent_and_content_sensitive() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::create_dir_all(a.path().join("sub")).unwrap();
        fs::create_dir_all(b.path().join("sub")).unwrap();
        // Created in different orders.
        fs::write(a.path().join("x.txt"), b"one").unwrap();
        fs::write(a.path().join("sub/y.bin"), b"two").unwrap();
        fs::write(b.path().join("sub/y.bin"), b"two").unwrap();
        fs::write(b.path().join("x.txt"), b"one").unwrap();
        let (fa, da) = digest_dir(a.path()).unwrap();
        let (_, db) = digest_dir(b.path()).unwrap();
        assert_eq!(da, db);
        assert_eq!(
            fa.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            vec!["sub/y.bin", "x.txt"]
        );
        fs::write(b.path().join("x.txt"), b"One").unwrap();
        assert_ne!(digest_dir(b.path()).unwrap().1, da);
        // Renaming a file changes the digest too.
        fs::rename(b.path().join("x.txt"), b.path().join("z.txt")).unwrap();
        fs::write(b.path().join("z.txt"), b"one").unwrap();
        assert_ne!(digest_dir(b.path()).unwrap().1, da);
    }

    #[test]
    fn digest_matches_the_written_definition() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), b"abc").unwrap();
        let (_, got) = digest_dir(d.path()).unwrap();
        let content: [u8; 32] = Sha256::digest(b"abc").into();
        let mut h = Sha256::new();
        h.update(b"aitbc/job-outputs/v1\0");
        h.update(1u64.to_le_bytes());
        h.update(b"a");
        h.update(3u64.to_le_bytes());
        h.update(content);
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(got.0, want);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            digest_dir(empty.path()).unwrap().1,
            Hash::domain(OUTPUT_DIGEST_DOMAIN, &[])
        );
    }

    #[test]
    fn symlinks_are_skipped_and_paths_cannot_escape() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let (files, _) = digest_dir(d.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert!(resolve_output(d.path(), "real").is_some());
        assert!(resolve_output(d.path(), "link").is_none());
        assert!(resolve_output(d.path(), "../real").is_none());
        assert!(resolve_output(d.path(), "/etc/passwd").is_none());
        assert!(resolve_output(d.path(), "").is_none());
    }
}
