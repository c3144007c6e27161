//! The HTTP listener of `flotilla run` (`--http-addr`) against a real control plane and a real
//! config repository: `/healthz` answers at once, `/readyz` is 503 until a pass of a valid
//! commit has finished, `/metrics` is strictly valid exposition text whose counters move with
//! the passes, and `POST /hooks/git` makes the daemon poll at once — with `--interval 600s`,
//! only the hook can explain a new commit applied within seconds — while a bad or missing
//! signature gets 401 and triggers nothing.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sha2::Sha256;
use support::ControlPlanes;
use support::daemon::{Daemon, wait_until};
use support::fleet::{ConfigRepo, clusters_yaml, configmap_yaml, profile_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n";
const SECRET: &str = "webhook-s3cret-for-tests";

/// A loopback address no one listens on now (the daemon binds it a moment later).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); the body is written
/// while the reply is read, so a server that answers before reading it (413) does not block.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> std::io::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut read, mut write) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&body).await;
        // Keep the write half open until the reply is read.
        write
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match read.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the reply (the server closed with our body unread) is fine.
            Err(e) if raw.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    drop(writer);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    Ok(Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

async fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[], vec![])
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn hook(addr: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request(addr, "POST", "/hooks/git", headers, body.to_vec())
        .await
        .unwrap_or_else(|e| panic!("POST /hooks/git: {e}"))
}

/// GitHub's `X-Hub-Signature-256` for `body`.
fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Waits for the listener, then returns how long that took.
async fn listening(addr: &str, daemon: &Daemon) -> Duration {
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await
    .unwrap_or_else(|| panic!("nothing listens on {addr}:\n{}", daemon.log()))
}

// ------------------------------------------------------------- a strict exposition parser

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `name{k="v",...}` at the start of `line`; returns the rest.
fn parse_series(line: &str) -> Result<(String, BTreeMap<String, String>, &str), String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // label name
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if inner[start..].starts_with('}') {
                rest = &inner[start + 1..];
                break;
            }
            let eq = inner[start..].find('=').ok_or("label without =")? + start;
            let key = &inner[start..eq];
            if !valid_name(key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    c => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.next().ok_or("unterminated labels")? {
                (_, ',') => {}
                (i, '}') => {
                    rest = &inner[i + 1..];
                    break;
                }
                (_, c) => return Err(format!("unexpected {c:?} after a label")),
            }
        }
    }
    Ok((name.to_string(), labels, rest))
}

/// Parses the whole text strictly: `# HELP/TYPE/UNIT` lines, samples of declared families with
/// the suffixes their type allows, no duplicate series, `# EOF` last.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if eof {
            return Err(at("text after # EOF".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            let name = name
                .filter(|n| valid_name(n))
                .ok_or_else(|| at("bad name".into()))?;
            match (kind, rest) {
                (Some("TYPE"), Some(t)) => {
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "info",
                        "summary",
                        "stateset",
                        "gaugehistogram",
                        "unknown",
                    ]
                    .contains(&t)
                    {
                        return Err(at(format!("unknown type {t}")));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at("family declared twice".into()));
                    }
                }
                (Some("HELP"), Some(_)) | (Some("UNIT"), Some(_)) => {}
                _ => return Err(at("bad comment".into())),
            }
            continue;
        }
        let (name, labels, rest) = parse_series(line).map_err(at)?;
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        let family = types
            .iter()
            .filter(|(f, _)| name.starts_with(f.as_str()))
            .max_by_key(|(f, _)| f.len())
            .ok_or_else(|| at("sample of an undeclared family".into()))?;
        let suffix = &name[family.0.len()..];
        let allowed: &[&str] = match family.1.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[
                "", "_total", "_bucket", "_count", "_sum", "_created", "_info",
            ],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!("suffix {suffix:?} for a {}", family.1)));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(at("series twice".into()));
        }
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    if !eof {
        return Err("no # EOF at the end".into());
    }
    Ok(samples)
}

/// The value of the one series of `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "several series match {name} {labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
}

async fn scrape(addr: &str) -> Vec<Sample> {
    let reply = get(addr, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .headers
            .contains("content-type: application/openmetrics-text"),
        "{}",
        reply.headers
    );
    parse_exposition(&reply.body).unwrap_or_else(|e| panic!("{e}\n{}", reply.body))
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\\\"\"} 1\n# TYPE g gauge\ng 1.5\n# EOF\n";
    let samples = parse_exposition(good).expect("valid");
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].labels["k"], "v\"");
    for bad in [
        "# TYPE a counter\na_total 1\n",                 // no EOF
        "# TYPE a counter\na 1\n# EOF\n",                // counter without _total
        "b 1\n# EOF\n",                                  // undeclared
        "# TYPE g gauge\ng{k=v} 1\n# EOF\n",             // unquoted
        "# TYPE g gauge\ng{k=\"v\"} x\n# EOF\n",         // bad value
        "# TYPE g gauge\ng 1\ng 2\n# EOF\n",             // duplicate series
        "# TYPE g gauge\ng 1\n# EOF\ng 2\n",             // after EOF
        "# TYPE g gauge\ng{k=\"v\",k=\"w\"} 1\n# EOF\n", // duplicate label
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ------------------------------------------------------------------------------ the tests

/// Cluster `one` (and the `clusters` given) get profile `web` (drift detection): Namespace
/// `apps`, ConfigMap `settings`.
fn base_config(repo: &ConfigRepo, clusters: &[(&str, &str)]) {
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[&[("one", "env: prod")], clusters].concat()),
    )
    .write("manifests/web/ns.yaml", NS)
    .write(
        "manifests/web/settings.yaml",
        &configmap_yaml("apps", "settings", &[("k", "v1")]),
    )
    .write(
        "profiles/web.yaml",
        &profile_yaml(
            "web",
            "  clusterSelector: {}\n  syncMode: ContinuousWithDriftDetection\n  policyRefs:\n  - {path: manifests/web}\n",
        ),
    );
}

async fn wait_for_note(repo: &ConfigRepo, commit: &str, daemon: &Daemon) {
    let seen = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { repo.note("refs/notes/flotilla-state", commit).is_some() },
    )
    .await;
    assert!(seen.is_some(), "no note on {commit}:\n{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_follow_the_passes() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let repo = ConfigRepo::new();
    // The first commit is invalid: it is noted, but no pass runs, so the daemon is not ready.
    base_config(&repo, &[]);
    repo.write(
        "profiles/web.yaml",
        &profile_yaml(
            "web",
            "  clusterSelector: \"env in (\"\n  policyRefs:\n  - {path: manifests/web}\n",
        ),
    );
    let invalid = repo.commit("invalid selector");
    let addr = free_addr();
    let daemon = Daemon::on(&repo, &fleet, &["--interval", "1s", "--http-addr", &addr]);
    listening(&addr, &daemon).await;
    let health = get(&addr, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    // Without --webhook-secret-file the hook is not there, and other methods are refused.
    assert_eq!(hook(&addr, &[], b"{}").await.status, 404);
    assert_eq!(
        request(&addr, "POST", "/healthz", &[], vec![])
            .await
            .expect("POST")
            .status,
        405
    );
    assert_eq!(get(&addr, "/nothing").await.status, 404);

    wait_for_note(&repo, &invalid, &daemon).await;
    let ready = get(&addr, "/readyz").await;
    assert_eq!(
        ready.status, 503,
        "ready before any pass of a valid commit: {}",
        ready.body
    );
    let samples = scrape(&addr).await;
    assert_eq!(
        value(&samples, "flotilla_pass_duration_seconds_count", &[]),
        Some(0.0)
    );
    assert!(
        value(
            &samples,
            "flotilla_git_polls_total",
            &[("result", "new_commit")]
        ) >= Some(1.0),
        "{samples:?}"
    );
    assert_eq!(
        value(&samples, "flotilla_objects_total", &[("cluster", "one")]),
        None,
        "{samples:?}"
    );

    // A valid commit: ready — though cluster `ghost` (no kubeconfig) is unreachable — objects
    // counted for (one, web), the commit is one's applied one, ghost's error is counted.
    base_config(&repo, &[("ghost", "env: prod")]);
    let first = repo.commit("valid");
    wait_for_note(&repo, &first, &daemon).await;
    let ready = get(&addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let samples = scrape(&addr).await;
    assert!(
        value(
            &samples,
            "flotilla_errors_total",
            &[("cluster", "ghost"), ("kind", "unreachable")]
        ) >= Some(1.0),
        "{samples:?}"
    );
    assert_eq!(
        value(
            &samples,
            "flotilla_last_successful_sync_timestamp_seconds",
            &[("cluster", "ghost")]
        ),
        None
    );
    let web = [("cluster", "one"), ("profile", "web")];
    let created = |s: &[Sample]| {
        value(
            s,
            "flotilla_objects_total",
            &[web[0], web[1], ("action", "created")],
        )
    };
    // The Namespace and the ConfigMap.
    assert_eq!(created(&samples), Some(2.0), "{samples:?}");
    let passes =
        value(&samples, "flotilla_pass_duration_seconds_count", &[]).expect("the pass histogram");
    assert!(passes >= 1.0);
    assert_eq!(
        value(
            &samples,
            "flotilla_applied_commit_info",
            &[("cluster", "one"), ("commit", &first)]
        ),
        Some(1.0),
        "{samples:?}"
    );
    let synced_at = value(
        &samples,
        "flotilla_last_successful_sync_timestamp_seconds",
        &[("cluster", "one")],
    )
    .expect("a last sync");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        synced_at > now - 120.0 && synced_at <= now + 1.0,
        "{synced_at} vs {now}"
    );

    // A second commit: one update, one more object, more passes, the commit series replaced.
    repo.write(
        "manifests/web/settings.yaml",
        &configmap_yaml("apps", "settings", &[("k", "v2")]),
    )
    .write(
        "manifests/web/more.yaml",
        &configmap_yaml("apps", "more", &[("k", "v")]),
    );
    let second = repo.commit("second");
    wait_for_note(&repo, &second, &daemon).await;
    let samples = scrape(&addr).await;
    assert_eq!(created(&samples), Some(3.0), "{samples:?}");
    assert_eq!(
        value(
            &samples,
            "flotilla_objects_total",
            &[web[0], web[1], ("action", "updated")]
        ),
        Some(1.0),
        "{samples:?}"
    );
    assert!(
        value(&samples, "flotilla_pass_duration_seconds_count", &[]) > Some(passes),
        "{samples:?}"
    );
    assert_eq!(
        value(
            &samples,
            "flotilla_applied_commit_info",
            &[("cluster", "one"), ("commit", &second)]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "flotilla_applied_commit_info",
            &[("commit", &first)]
        ),
        None,
        "the old commit's series stays: {samples:?}"
    );
    // With nothing new, the next polls find the branch unchanged.
    let unchanged = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            value(
                &scrape(&addr).await,
                "flotilla_git_polls_total",
                &[("result", "unchanged")],
            ) >= Some(1.0)
        },
    )
    .await;
    assert!(
        unchanged.is_some(),
        "no unchanged poll counted:\n{}",
        daemon.log()
    );
    assert_eq!(
        value(&samples, "flotilla_errors_total", &[("cluster", "one")]),
        None
    );

    // A drift repair is counted when it arrives (no pass needed).
    let client = fleet.client("one").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "apps");
    let mut edits = 0;
    let repaired = wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        edits += 1;
        let configmaps = configmaps.clone();
        let addr = addr.clone();
        async move {
            // Edited again each try: the watches may not be up at the first one.
            configmaps
                .patch(
                    "settings",
                    &PatchParams {
                        field_manager: Some("kubectl-edit".into()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(json!({"data": {"k": format!("edited-{edits}")}})),
                )
                .await
                .expect("edit the ConfigMap");
            tokio::time::sleep(Duration::from_millis(300)).await;
            value(
                &scrape(&addr).await,
                "flotilla_drift_repairs_total",
                &[web[0], web[1], ("result", "repaired")],
            ) >= Some(1.0)
        }
    })
    .await;
    assert!(
        repaired.is_some(),
        "no drift repair counted:\n{}",
        daemon.log()
    );

    // SIGTERM stops the listener with the daemon.
    let mut daemon = daemon;
    daemon.signal("-TERM");
    let (status, _) = daemon
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", daemon.log()));
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "{addr} still answers after the daemon exited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_polls_at_once_and_a_bad_one_triggers_nothing() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "apps");
    let repo = ConfigRepo::new();
    base_config(&repo, &[]);
    let first = repo.commit("first");
    let secret_dir = tempfile::tempdir().expect("temp dir");
    let secret_file = secret_dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write the secret");
    let addr = free_addr();
    let secret_arg = secret_file.display().to_string();
    let daemon = Daemon::on(
        &repo,
        &fleet,
        &[
            "--interval",
            "600s",
            "--http-addr",
            &addr,
            "--webhook-secret-file",
            &secret_arg,
        ],
    );
    listening(&addr, &daemon).await;
    wait_for_note(&repo, &first, &daemon).await;
    let samples = scrape(&addr).await;
    assert_eq!(
        value(&samples, "flotilla_pass_duration_seconds_count", &[]),
        Some(1.0)
    );

    // Polled because of a hook, and applied: how long from the POST to the object.
    let applied_after_hook = |name: &'static str, headers: Vec<(String, String)>, body: Vec<u8>| {
        let configmaps = configmaps.clone();
        let addr = addr.clone();
        async move {
            let started = Instant::now();
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let reply = hook(&addr, &headers, &body).await;
            assert_eq!(reply.status, 202, "{}", reply.body);
            let seen = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                let configmaps = configmaps.clone();
                async move { configmaps.get_opt(name).await.ok().flatten().is_some() }
            })
            .await;
            seen.map(|_| started.elapsed())
        }
    };

    // GitHub: the body signed with the secret.
    repo.write(
        "manifests/web/github.yaml",
        &configmap_yaml("apps", "github", &[("k", "v")]),
    );
    let second = repo.commit("second");
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{second}"}}"#).into_bytes();
    let signature = github_signature(SECRET, &body);
    let github = applied_after_hook(
        "github",
        vec![
            ("X-GitHub-Event".into(), "push".into()),
            ("X-Hub-Signature-256".into(), signature),
            ("Content-Type".into(), "application/json".into()),
        ],
        body,
    )
    .await;
    let github =
        github.unwrap_or_else(|| panic!("not applied within 10 s of the hook:\n{}", daemon.log()));
    wait_for_note(&repo, &second, &daemon).await;

    // GitLab: the secret as a token.
    repo.write(
        "manifests/web/gitlab.yaml",
        &configmap_yaml("apps", "gitlab", &[("k", "v")]),
    );
    let third = repo.commit("third");
    let gitlab = applied_after_hook(
        "gitlab",
        vec![
            ("X-Gitlab-Event".into(), "Push Hook".into()),
            ("X-Gitlab-Token".into(), SECRET.into()),
        ],
        br#"{"object_kind":"push"}"#.to_vec(),
    )
    .await;
    let gitlab =
        gitlab.unwrap_or_else(|| panic!("not applied within 10 s of the hook:\n{}", daemon.log()));
    wait_for_note(&repo, &third, &daemon).await;
    eprintln!("commit → hook → object applied: GitHub {github:?}, GitLab {gitlab:?}");

    // Refused: a forged signature, a wrong token, a wrong prefix, no header at all; a body
    // over the cap; another method.
    repo.write(
        "manifests/web/forged.yaml",
        &configmap_yaml("apps", "forged", &[("k", "v")]),
    );
    let fourth = repo.commit("fourth");
    let polls = |s: &[Sample]| -> f64 {
        s.iter()
            .filter(|x| x.name == "flotilla_git_polls_total")
            .map(|x| x.value)
            .sum()
    };
    let polls_before = polls(&scrape(&addr).await);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let forged = github_signature("not-the-secret", body);
    let valid = github_signature(SECRET, body);
    for (what, headers) in [
        (
            "forged signature",
            vec![("X-Hub-Signature-256", forged.as_str())],
        ),
        (
            "sha1 prefix",
            vec![("X-Hub-Signature-256", &valid.replace("sha256=", "sha1="))],
        ),
        ("wrong token", vec![("X-Gitlab-Token", "webhook-s3cret")]),
        ("no header", vec![]),
    ] {
        let reply = hook(&addr, &headers, body).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    }
    let too_big = vec![b' '; 1024 * 1024 + 1];
    let signature = github_signature(SECRET, &too_big);
    let reply = hook(&addr, &[("X-Hub-Signature-256", &signature)], &too_big).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(get(&addr, "/hooks/git").await.status, 405);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        configmaps.get_opt("forged").await.expect("get").is_none(),
        "a refused hook made the daemon apply the new commit:\n{}",
        daemon.log()
    );
    assert!(repo.note("refs/notes/flotilla-state", &fourth).is_none());
    assert_eq!(
        polls(&scrape(&addr).await),
        polls_before,
        "a refused hook polled"
    );

    // The same commit with a valid hook: applied (it was only the signature).
    let valid_headers = vec![("X-Hub-Signature-256".to_string(), valid.clone())];
    let forged_applied = applied_after_hook("forged", valid_headers, body.to_vec()).await;
    assert!(forged_applied.is_some(), "{}", daemon.log());
    wait_for_note(&repo, &fourth, &daemon).await;
    let samples = scrape(&addr).await;
    assert_eq!(
        value(&samples, "flotilla_pass_duration_seconds_count", &[]),
        Some(4.0),
        "one pass per poll the hooks asked for: {samples:?}"
    );
    assert!(
        !daemon.log().contains(SECRET),
        "the secret is in the log:\n{}",
        daemon.log()
    );
}
