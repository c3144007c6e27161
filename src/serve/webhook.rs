//! Whether a `POST /hooks/git` request comes from the forge that knows the shared secret:
//! GitHub signs the body (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`), GitLab sends the
//! secret itself (`X-Gitlab-Token`). Pure: headers and body in, a verdict out; both comparisons
//! take constant time so a caller cannot learn the secret byte by byte.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// GitHub's signature header.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// GitLab's token header.
pub const GITLAB_TOKEN: &str = "x-gitlab-token";

/// Why a webhook request is refused (the texts never contain the secret or the signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Neither header is there.
    #[error("no X-Hub-Signature-256 or X-Gitlab-Token header")]
    Missing,
    /// The GitHub header does not start with `sha256=`.
    #[error("X-Hub-Signature-256 does not start with sha256=")]
    WrongPrefix,
    /// The GitHub signature is not 64 hex digits.
    #[error("X-Hub-Signature-256 is not a hex SHA-256 digest")]
    NotHex,
    /// The GitHub signature is not the body's HMAC under the secret.
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
    /// The GitLab token is not the secret.
    #[error("X-Gitlab-Token does not match")]
    WrongToken,
    /// The secret file holds nothing (after trailing newlines are removed).
    #[error("the webhook secret file {0} is empty")]
    EmptySecret(String),
}

/// The shared secret; its `Debug` hides the value so it cannot reach a log by accident.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    /// The secret as read from `file` (named in the error only), without the trailing newline
    /// an editor or `echo` leaves; an empty secret would accept anyone who knows it is empty.
    pub fn new(file: &str, mut bytes: Vec<u8>) -> Result<Secret, WebhookError> {
        while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(WebhookError::EmptySecret(file.to_string()));
        }
        Ok(Secret(bytes))
    }
}

/// Who sent a verified request (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A body signed with the secret.
    GitHub,
    /// The secret as a token.
    GitLab,
}

/// Checks a request: a GitHub signature when that header is present (a bad one is refused, not
/// tried as GitLab's), else a GitLab token.
pub fn verify(
    github_signature: Option<&[u8]>,
    gitlab_token: Option<&[u8]>,
    body: &[u8],
    secret: &Secret,
) -> Result<Sender, WebhookError> {
    if let Some(signature) = github_signature {
        let hex = signature
            .strip_prefix(b"sha256=")
            .ok_or(WebhookError::WrongPrefix)?;
        let digest = decode_hex(hex).ok_or(WebhookError::NotHex)?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
            .map_err(|_| WebhookError::Mismatch)?;
        mac.update(body);
        return mac
            .verify_slice(&digest)
            .map(|()| Sender::GitHub)
            .map_err(|_| WebhookError::Mismatch);
    }
    if let Some(token) = gitlab_token {
        // `ct_eq` on slices of different lengths answers false at once: only the length leaks.
        return if bool::from(token.ct_eq(&secret.0)) {
            Ok(Sender::GitLab)
        } else {
            Err(WebhookError::WrongToken)
        };
    }
    Err(WebhookError::Missing)
}

/// 64 hex digits (either case) → 32 bytes; anything else → `None`.
fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    hex.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new("secret", s.as_bytes().to_vec()).expect("a secret")
    }

    /// The GitHub header for `body` under `key`.
    fn sign(key: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("key");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    #[test]
    fn github_example_from_the_documentation_verifies() {
        // GitHub's documented test vector for validating webhook deliveries.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify(
                Some(header.as_bytes()),
                None,
                b"Hello, World!",
                &secret("It's a Secret to Everybody")
            ),
            Ok(Sender::GitHub)
        );
    }

    /// Name, GitHub header, GitLab header, body, verdict.
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a [u8],
        Result<Sender, WebhookError>,
    );

    #[test]
    fn verdicts() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign("s3cret", body);
        let upper = good.replace("sha256=", "").to_uppercase();
        let upper = format!("sha256={upper}");
        let other_key = sign("other", body);
        let empty_body = sign("s3cret", b"");
        let flipped = {
            // Same length, last digit changed.
            let mut s = good.clone();
            let last = s.pop().expect("a digit");
            s.push(if last == '0' { '1' } else { '0' });
            s
        };
        let odd = &good[..good.len() - 1];
        let sha1 = good.replace("sha256=", "sha1=");
        let not_hex = format!(
            "sha256={}",
            good["sha256=".len()..].replace(|c: char| c.is_ascii_digit(), "z")
        );
        let cases: Vec<Case> = vec![
            (
                "good signature",
                Some(&good),
                None,
                body,
                Ok(Sender::GitHub),
            ),
            (
                "upper-case hex",
                Some(&upper),
                None,
                body,
                Ok(Sender::GitHub),
            ),
            (
                "empty body, signed",
                Some(&empty_body),
                None,
                b"",
                Ok(Sender::GitHub),
            ),
            (
                "empty body, signature of another body",
                Some(&good),
                None,
                b"",
                Err(WebhookError::Mismatch),
            ),
            (
                "other body",
                Some(&good),
                None,
                b"{}",
                Err(WebhookError::Mismatch),
            ),
            (
                "other key",
                Some(&other_key),
                None,
                body,
                Err(WebhookError::Mismatch),
            ),
            (
                "one digit changed",
                Some(&flipped),
                None,
                body,
                Err(WebhookError::Mismatch),
            ),
            (
                "sha1 prefix",
                Some(&sha1),
                None,
                body,
                Err(WebhookError::WrongPrefix),
            ),
            (
                "no prefix",
                Some(&good["sha256=".len()..]),
                None,
                body,
                Err(WebhookError::WrongPrefix),
            ),
            (
                "odd-length hex",
                Some(odd),
                None,
                body,
                Err(WebhookError::NotHex),
            ),
            (
                "not hex",
                Some(&not_hex),
                None,
                body,
                Err(WebhookError::NotHex),
            ),
            (
                "empty signature",
                Some("sha256="),
                None,
                body,
                Err(WebhookError::NotHex),
            ),
            (
                "bad signature is not retried as a token",
                Some("sha256=00"),
                Some("s3cret"),
                body,
                Err(WebhookError::NotHex),
            ),
            (
                "gitlab token",
                None,
                Some("s3cret"),
                body,
                Ok(Sender::GitLab),
            ),
            (
                "gitlab token, empty body",
                None,
                Some("s3cret"),
                b"",
                Ok(Sender::GitLab),
            ),
            (
                "gitlab wrong token",
                None,
                Some("s3cret!"),
                body,
                Err(WebhookError::WrongToken),
            ),
            (
                "gitlab prefix of the token",
                None,
                Some("s3c"),
                body,
                Err(WebhookError::WrongToken),
            ),
            (
                "gitlab empty token",
                None,
                Some(""),
                body,
                Err(WebhookError::WrongToken),
            ),
            ("no header", None, None, body, Err(WebhookError::Missing)),
        ];
        for (name, github, gitlab, body, want) in cases {
            let got = verify(
                github.map(str::as_bytes),
                gitlab.map(str::as_bytes),
                body,
                &secret("s3cret"),
            );
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn secret_file_contents() {
        assert_eq!(
            Secret::new("f", b"abc\n".to_vec()).map(|s| s.0),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            Secret::new("f", b"abc\r\n".to_vec()).map(|s| s.0),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            Secret::new("f", b" abc ".to_vec()).map(|s| s.0),
            Ok(b" abc ".to_vec())
        );
        assert_eq!(
            Secret::new("f", b"\n".to_vec()).map(|s| s.0),
            Err(WebhookError::EmptySecret("f".into()))
        );
        assert_eq!(format!("{:?}", secret("hunter2")), "Secret(redacted)");
    }
}
