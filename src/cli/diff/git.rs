//! `mailflow diff`'s old rule set from a git revision: the rule file's folder as it was at
//! that revision, exported by git itself into a temporary folder, so includes and imports
//! resolve as they did then, and nothing is checked out.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A rule set's files at a revision, in a folder that goes when this does.
pub(super) struct Revision {
    /// The rule file (or folder) as it was.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running git: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether `rev` names a commit in the repository holding `path`.
pub(super) fn is_revision(path: &Path, rev: &str) -> bool {
    let dir = folder(path);
    git(
        &dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .is_ok()
}

fn folder(path: &Path) -> PathBuf {
    let p = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

/// `path` (a rule file or folder in a git work tree) as it was at `rev`.
pub(super) fn at(rev: &str, path: &Path) -> Result<Revision, String> {
    let path = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = folder(&path);
    let top = git(&dir, &["rev-parse", "--show-toplevel"])?;
    let top = PathBuf::from(String::from_utf8_lossy(&top).trim().to_string());
    let top = std::fs::canonicalize(&top).map_err(|e| format!("{}: {e}", top.display()))?;
    let rel_dir = dir
        .strip_prefix(&top)
        .map_err(|_| format!("{} is not inside {}", dir.display(), top.display()))?;
    let rel_path = path
        .strip_prefix(&top)
        .map_err(|_| format!("{} is not inside {}", path.display(), top.display()))?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = if rel_dir.as_os_str().is_empty() {
        ".".to_string()
    } else {
        rel_dir.display().to_string()
    };
    let tar = git(&top, &["archive", "--format=tar", rev, "--", &spec])?;
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(tmp.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running tar: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(&tar)
            .map_err(|e| format!("extracting {rev}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "extracting {rev}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let old = tmp.path().join(rel_path);
    if !old.exists() {
        return Err(format!("{} does not exist at {rev}", rel_path.display()));
    }
    Ok(Revision {
        path: old,
        _dir: tmp,
    })
}
