//! OpenSSH `known_hosts` matching, so that an ssh remote is only trusted when its host key is the
//! one the operator recorded.
//!
//! Supported: plain host patterns (comma-separated, `*`/`?` wildcards, `!` negation), the
//! `[host]:port` form for non-default ports, and `@revoked` markers. Limitations: hashed entries
//! (`|1|salt|hash`, written with `HashKnownHosts yes`) need HMAC-SHA1, which no dependency of this
//! crate provides, so they are skipped here (the caller may hand the decision to libgit2's own
//! check, which reads `~/.ssh/known_hosts` with libssh2 and understands them); `@cert-authority`
//! lines are skipped (host certificates are not supported).

use base64::Engine;

/// What `known_hosts` says about a host and the key it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A line for this host has exactly this key.
    Known,
    /// The host has entries but none with this key: possibly a man in the middle.
    Mismatch,
    /// This key is marked `@revoked`.
    Revoked,
    /// No plain entry names the host. `hashed` counts the hashed lines that could not be checked.
    Unknown { hashed: usize },
}

/// The name OpenSSH uses for a host in `known_hosts`: `host` on port 22, `[host]:port` otherwise.
pub(crate) fn lookup_name(host: &str, port: Option<u16>) -> String {
    let host = host.to_ascii_lowercase();
    match port {
        Some(port) if port != 22 => format!("[{host}]:{port}"),
        _ => host,
    }
}

/// Checks the raw host key (the SSH wire-format blob, as in the base64 field of a line) of
/// `name` (see [`lookup_name`]) against the contents of a `known_hosts` file.
pub(crate) fn check(contents: &str, name: &str, key: &[u8]) -> Verdict {
    let mut host_has_entries = false;
    let mut known = false;
    let mut hashed = 0;
    for line in contents.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(mut patterns) = fields.next() else {
            continue;
        };
        let mut marker = None;
        if patterns.starts_with('@') {
            marker = Some(patterns);
            let Some(next) = fields.next() else { continue };
            patterns = next;
        }
        let (Some(_key_type), Some(key_b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if patterns.starts_with("|1|") {
            hashed += 1;
            continue;
        }
        if !patterns_match(patterns, name) {
            continue;
        }
        let Ok(line_key) = base64::engine::general_purpose::STANDARD.decode(key_b64) else {
            continue;
        };
        match marker {
            Some("@revoked") if line_key == key => return Verdict::Revoked,
            Some(_) => continue,
            None => {
                host_has_entries = true;
                if line_key == key {
                    known = true;
                }
            }
        }
    }
    if known {
        Verdict::Known
    } else if host_has_entries {
        Verdict::Mismatch
    } else {
        Verdict::Unknown { hashed }
    }
}

/// OpenSSH pattern-list semantics: a negated match excludes the line, otherwise any positive
/// match includes it.
fn patterns_match(list: &str, name: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(&negated.to_ascii_lowercase(), name) {
                return false;
            }
        } else if glob(&pattern.to_ascii_lowercase(), name) {
            positive = true;
        }
    }
    positive
}

/// `*` matches any run of characters, `?` exactly one.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn matches_hosts_ports_patterns_and_markers() {
        let key_a = b"\0\0\0\x0bssh-ed25519 key-a".to_vec();
        let key_b = b"\0\0\0\x0bssh-ed25519 key-b".to_vec();
        let key_c = b"\0\0\0\x0bssh-ed25519 key-c".to_vec();
        let contents = format!(
            "# comment\n\
             \n\
             git.example.com,10.0.0.1 ssh-ed25519 {a} comment here\n\
             [git.example.com]:2222 ssh-ed25519 {b}\n\
             *.corp.example,!bad.corp.example ssh-ed25519 {a}\n\
             |1|c2FsdA==|aGFzaA== ssh-ed25519 {a}\n\
             @revoked * ssh-ed25519 {c}\n\
             @cert-authority *.example.com ssh-ed25519 {b}\n\
             broken-line-without-key\n",
            a = b64(&key_a),
            b = b64(&key_b),
            c = b64(&key_c),
        );
        let cases = [
            ("git.example.com", None, &key_a, Verdict::Known),
            ("GIT.example.com", Some(22), &key_a, Verdict::Known),
            ("10.0.0.1", None, &key_a, Verdict::Known),
            ("git.example.com", None, &key_b, Verdict::Mismatch),
            ("git.example.com", Some(2222), &key_b, Verdict::Known),
            ("git.example.com", Some(2222), &key_a, Verdict::Mismatch),
            (
                "git.example.com",
                Some(2200),
                &key_a,
                Verdict::Unknown { hashed: 1 },
            ),
            ("a.corp.example", None, &key_a, Verdict::Known),
            (
                "bad.corp.example",
                None,
                &key_a,
                Verdict::Unknown { hashed: 1 },
            ),
            (
                "other.example",
                None,
                &key_a,
                Verdict::Unknown { hashed: 1 },
            ),
            ("git.example.com", None, &key_c, Verdict::Revoked),
        ];
        for (host, port, key, want) in cases {
            let name = lookup_name(host, port);
            assert_eq!(check(&contents, &name, key), want, "{name}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("*.example.com", "a.b.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("h?st", "host"));
        assert!(!glob("h?st", "hoost"));
        assert!(glob("[h]:*", "[h]:2222"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }
}
