//! Where a pinned external tool (helm, kustomize) is found: an explicit path or name from the
//! command line, else the tool on `PATH`, else `scripts/testbin.sh`'s cache, so a developer
//! machine works without installing anything. Shared by the subprocess adapters so they agree.

use std::path::{Path, PathBuf};

/// Why a tool was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The explicit path (or name on `PATH`) is not an executable file.
    BadExplicit(String),
    /// Neither on `PATH` nor in the testbin cache; the cache directory that was looked in.
    NotFound(String),
}

/// The absolute path of tool `name`: `explicit` (a bare name is looked up on `PATH`), else
/// `name` on `PATH`, else the testbin cache (`$FLOTILLA_TESTBIN` or `~/.cache/flotilla/testbin`).
pub fn locate(name: &str, explicit: Option<&Path>) -> Result<PathBuf, Missing> {
    if let Some(path) = explicit {
        let found = if path.components().count() == 1 && !path.is_absolute() {
            on_path(&path.to_string_lossy())
        } else {
            executable(path).then(|| path.to_path_buf())
        };
        return found
            .map(canonical)
            .ok_or_else(|| Missing::BadExplicit(path.display().to_string()));
    }
    if let Some(bin) = on_path(name) {
        return Ok(canonical(bin));
    }
    let cache = testbin_dir();
    match &cache {
        Some(dir) if executable(&dir.join(name)) => Ok(canonical(dir.join(name))),
        _ => Err(Missing::NotFound(cache.map_or_else(
            || "$FLOTILLA_TESTBIN (unset)".into(),
            |d| d.display().to_string(),
        ))),
    }
}

/// The first executable `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| executable(candidate))
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn testbin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FLOTILLA_TESTBIN") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flotilla/testbin"))
}

/// Absolute, so a tool can run in another directory.
fn canonical(path: PathBuf) -> PathBuf {
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// A tool's cleaned error output as a note line: cut to at most `max` bytes (on a character
/// boundary, with a visible marker), and never empty, so a silent failure still says so.
pub fn capped_message(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" [truncated]");
    }
    if text.is_empty() {
        "(no message)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::capped_message;

    #[test]
    fn messages_are_capped_on_a_character_boundary_and_never_empty() {
        let cases = [
            ("short", 10, "short"),
            ("", 10, "(no message)"),
            ("abcdef", 3, "abc [truncated]"),
            // "é" is two bytes: a cut inside it moves back to the boundary.
            ("aé", 2, "a [truncated]"),
        ];
        for (text, max, want) in cases {
            assert_eq!(
                capped_message(text.to_string(), max),
                want,
                "{text:?}/{max}"
            );
        }
    }
}
