//! Repository addresses: telling a URL from a local directory, and redacting the credentials a
//! URL may carry so that only the redacted form is ever logged or put in an error.

use std::path::{Path, PathBuf};

/// Where a `--repo` argument points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A URL to mirror and fetch from (file://, http(s)://, ssh://, git://, or scp-like).
    Remote(String),
    /// An existing directory, used in place.
    Local(PathBuf),
}

/// Schemes whose user name is an account name (not a secret) and which carry no token.
const SSH_SCHEMES: &[&str] = &["ssh", "ssh+git", "git+ssh"];

/// Schemes libgit2 can fetch from.
const SCHEMES: &[&str] = &["file", "http", "https", "ssh", "ssh+git", "git+ssh", "git"];

/// Tells a URL from a local directory. A `scheme://` string is always a URL; otherwise an
/// existing directory wins over the scp-like `[user@]host:path` form.
pub(crate) fn classify(repo: &str) -> Result<Location, String> {
    if let Some((scheme, _)) = repo.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if SCHEMES.contains(&scheme.as_str()) {
            return Ok(Location::Remote(repo.to_string()));
        }
        return Err(format!(
            "unsupported URL scheme {scheme:?} (use file, http, https, ssh or git)"
        ));
    }
    if repo.is_empty() {
        return Err("empty repository address".to_string());
    }
    let path = Path::new(repo);
    if path.is_dir() {
        return Ok(Location::Local(path.to_path_buf()));
    }
    if is_scp_like(repo) {
        return Ok(Location::Remote(repo.to_string()));
    }
    Err("neither a URL nor an existing directory".to_string())
}

/// `[user@]host:path`, the form `git clone git@github.com:org/repo.git` accepts.
fn is_scp_like(repo: &str) -> bool {
    match repo.split_once(':') {
        Some((host, path)) => {
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            // One letter would be a Windows drive; a slash before the colon makes it a path.
            host.len() > 1 && !host.contains('/') && !path.is_empty()
        }
        None => false,
    }
}

/// The port of an `ssh://` URL (`None` for scp-like addresses and URLs without a port), so that
/// host keys are looked up as `[host]:port` the way OpenSSH writes them.
pub(crate) fn port(url: &str) -> Option<u16> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = host_port.rsplit_once(':')?;
    if host.starts_with('[') && !host.ends_with(']') {
        return None; // a bare IPv6 address without port
    }
    port.parse().ok()
}

/// Splits `scheme://userinfo@rest` into its pieces; `None` when there is no userinfo.
fn userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    let rest = &url[scheme_end + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    Some((scheme, &authority[..at], &rest[at + 1..]))
}

/// The URL with its credentials replaced by `***`, the only form that is ever logged or put in an
/// error. For http(s), file and git the whole userinfo goes (a lone user name is often the token
/// itself, as with `https://TOKEN@github.com/...`); for ssh the user name stays (`git@`) and only a
/// password goes. Addresses without `scheme://` (scp-like `git@host:path`, local paths) carry no
/// secret and are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, info, rest)) = userinfo(url) else {
        return url.to_string();
    };
    let ssh = SSH_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str());
    let redacted = match info.split_once(':') {
        Some((user, _)) if ssh => format!("{user}:***"),
        None if ssh => info.to_string(),
        _ => "***".to_string(),
    };
    format!("{scheme}://{redacted}@{rest}")
}

/// The secret parts of a URL's userinfo (whatever [`redact_url`] hides), so that messages coming
/// back from libgit2 can be scrubbed of them too.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let Some((scheme, info, _)) = userinfo(url) else {
        return Vec::new();
    };
    let ssh = SSH_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str());
    let mut secrets = Vec::new();
    match info.split_once(':') {
        Some((user, password)) => {
            if !ssh {
                secrets.push(user.to_string());
            }
            secrets.push(password.to_string());
        }
        None if !ssh => secrets.push(info.to_string()),
        None => {}
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo() {
        let cases = [
            (
                "https://user:s3cret@example.com/org/repo.git",
                "https://***@example.com/org/repo.git",
            ),
            (
                "https://ghp_token@github.com/org/repo",
                "https://***@github.com/org/repo",
            ),
            (
                "http://x:tok@127.0.0.1:8080/r.git?x=1",
                "http://***@127.0.0.1:8080/r.git?x=1",
            ),
            (
                "https://example.com/org/repo.git",
                "https://example.com/org/repo.git",
            ),
            (
                "https://example.com/path/with@at",
                "https://example.com/path/with@at",
            ),
            ("https://u:p@ss@example.com/r", "https://***@example.com/r"),
            (
                "ssh://git@example.com:2222/org/repo.git",
                "ssh://git@example.com:2222/org/repo.git",
            ),
            (
                "ssh://git:pw@example.com/org/repo.git",
                "ssh://git:***@example.com/org/repo.git",
            ),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
            ("file:///srv/git/repo.git", "file:///srv/git/repo.git"),
            ("/srv/git/repo", "/srv/git/repo"),
            ("HTTPS://a:b@h/r", "HTTPS://***@h/r"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_url(input), want, "{input}");
        }
    }

    #[test]
    fn secrets_are_what_redaction_hides() {
        assert_eq!(
            url_secrets("https://user:s3cret@example.com/r"),
            vec!["user", "s3cret"]
        );
        assert_eq!(url_secrets("https://tok@example.com/r"), vec!["tok"]);
        assert_eq!(url_secrets("ssh://git:pw@example.com/r"), vec!["pw"]);
        assert!(url_secrets("ssh://git@example.com/r").is_empty());
        assert!(url_secrets("https://example.com/r").is_empty());
    }

    #[test]
    fn classifies_urls_and_paths() {
        let dir = std::env::temp_dir();
        let dir_str = dir.to_str().expect("utf-8 temp dir");
        let cases: Vec<(&str, Result<Location, &str>)> = vec![
            (
                "file:///srv/r.git",
                Ok(Location::Remote("file:///srv/r.git".into())),
            ),
            (
                "https://h/r.git",
                Ok(Location::Remote("https://h/r.git".into())),
            ),
            (
                "ssh://git@h:22/r",
                Ok(Location::Remote("ssh://git@h:22/r".into())),
            ),
            (
                "git@github.com:org/r.git",
                Ok(Location::Remote("git@github.com:org/r.git".into())),
            ),
            ("host:path", Ok(Location::Remote("host:path".into()))),
            (dir_str, Ok(Location::Local(dir.clone()))),
            ("ftp://h/r", Err("unsupported URL scheme")),
            ("./does/not/exist", Err("neither a URL")),
            ("a/b:c", Err("neither a URL")),
            ("C:repo", Err("neither a URL")),
            ("", Err("empty")),
        ];
        for (input, want) in cases {
            match (classify(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn ssh_ports() {
        assert_eq!(port("ssh://git@h:2222/r"), Some(2222));
        assert_eq!(port("ssh://h/r"), None);
        assert_eq!(port("ssh://[::1]:2200/r"), Some(2200));
        assert_eq!(port("ssh://[::1]/r"), None);
        assert_eq!(port("git@h:org/r"), None);
    }
}
