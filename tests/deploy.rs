//! deploy/ against real parts: every kustomize variant and `helm template` of the chart is
//! accepted by a real kube-apiserver (server-side dry-run; the pod templates also as Pods, so the
//! namespace's `restricted` Pod Security admission judges them), the chart lints, every container
//! argument is a flag `flotilla run --help` lists, deploy/Dockerfile builds through
//! scripts/build-release.sh, and that script produces binaries that run.
//!
//! Not tested here: building the image itself (no container engine on the test machines) — the
//! Dockerfile test checks its structure, and the release test checks the binaries it copies and
//! the shared libraries flotilla needs at runtime.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::fleet::flotilla_bin;
use support::{ControlPlanes, require_testbin, testbin_dir};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn testbin(name: &str) -> PathBuf {
    require_testbin(&[name]);
    testbin_dir().join(name)
}

/// Runs `cmd`, panics with its output when it fails, returns stdout.
fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{what}: output is not UTF-8: {e}"))
}

fn kustomize_build(dir: &str) -> String {
    run_ok(
        Command::new(testbin("kustomize"))
            .arg("build")
            .arg(repo_root().join(dir)),
        &format!("kustomize build {dir}"),
    )
}

fn helm_template(set: &[&str]) -> String {
    let mut cmd = Command::new(testbin("helm"));
    cmd.args(["template", "flotilla"])
        .arg(repo_root().join("deploy/chart"))
        .args(["--namespace", "flotilla-system"])
        // A private helm home: nothing read from or written to ~/.config/helm.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("flotilla-deploy-test-helm"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("flotilla-deploy-test-helm"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("flotilla-deploy-test-helm"),
        );
    for s in set {
        cmd.args(["--set", s]);
    }
    run_ok(&mut cmd, &format!("helm template {set:?}"))
}

/// The objects of a multi-document YAML stream (comment-only documents dropped).
fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("parse rendered YAML: {e}\n{yaml}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// What the tests check: every way the manifests are meant to be installed.
const CHART_SHARDED: &[&str] = &[
    "shards=3",
    "leaderElection.enabled=true",
    "leaderElection.leaseName=fleet",
    "metrics.serviceMonitor.enabled=false",
    "webhook.existingSecret=flotilla-webhook",
    "gitCredentials.existingSecret=flotilla-git",
    "gitCredentials.ssh.enabled=true",
    "managementCluster=mgmt",
    "repo.path=fleet",
    "extraArgs={--classify-interval=2m}",
];
const CHART_SINGLE_FROM_VALUES: &[&str] = &[
    "replicas=1",
    "leaderElection.enabled=false",
    "gitCredentials.token=placeholder-token",
    "gitCredentials.ssh.enabled=true",
    "gitCredentials.ssh.privateKey=placeholder-key",
    "gitCredentials.ssh.knownHosts=git.example.com ssh-ed25519 AAAA",
];

fn renders() -> Vec<(String, String)> {
    vec![
        (
            "kustomize build deploy/kubernetes".into(),
            kustomize_build("deploy/kubernetes"),
        ),
        (
            "kustomize build deploy/kubernetes/sharded".into(),
            kustomize_build("deploy/kubernetes/sharded"),
        ),
        ("helm template (default values)".into(), helm_template(&[])),
        (
            "helm template (CHART_SHARDED)".into(),
            helm_template(CHART_SHARDED),
        ),
        (
            "helm template (CHART_SINGLE_FROM_VALUES)".into(),
            helm_template(CHART_SINGLE_FROM_VALUES),
        ),
    ]
}

/// Files of deploy/kubernetes that no kustomization includes, applied as they are.
const LOOSE_FILES: &[&str] = &[
    "deploy/kubernetes/secrets.example.yaml",
    "deploy/kubernetes/management-sync-rbac.yaml",
];

fn is_workload(object: &Value) -> bool {
    matches!(object["kind"].as_str(), Some("Deployment" | "StatefulSet"))
}

fn workloads(yaml: &str) -> Vec<Value> {
    objects(yaml).into_iter().filter(is_workload).collect()
}

fn name_of(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

// ---------------------------------------------------------------------------------------------
// A real kube-apiserver

/// `kubectl apply --server-side --dry-run=server` of `yaml`; returns kubectl's output, after
/// checking it names one dry-run result per object.
fn dry_run(kubectl: &Path, kubeconfig: &Path, what: &str, yaml: &str) -> String {
    let expected = objects(yaml).len();
    assert!(expected > 0, "{what}: nothing rendered");
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=flotilla-deploy-test",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        stdin.write_all(yaml.as_bytes()).expect("write to kubectl");
    }
    let out = child.wait_with_output().expect("wait for kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: the API server refused it ({}):\n{stdout}\n{}\n--- input ---\n{yaml}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let results = stdout
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        results, expected,
        "{what}: {expected} objects sent, kubectl reports:\n{stdout}"
    );
    stdout
}

#[test]
fn manifests_and_chart_are_accepted_by_a_real_api_server() {
    let kubectl = testbin("kubectl");
    let planes = ControlPlanes::start(1, &[]);
    let kubeconfig = planes.kubeconfig("cluster-1");

    // Namespaced objects need their namespace to exist, even in a dry-run: create it for real,
    // from the manifest (with its Pod Security label).
    run_ok(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "--server-side", "-f"])
            .arg(repo_root().join("deploy/kubernetes/common/namespace.yaml")),
        "create the flotilla-system namespace",
    );

    let mut checked = 0;
    for (what, yaml) in renders() {
        dry_run(&kubectl, &kubeconfig, &what, &yaml);
        checked += 1;

        // The pod template as a Pod: workloads are only admitted, but a Pod meets the
        // namespace's `pod-security.kubernetes.io/enforce: restricted` admission (and a Pod's
        // own validation) — there are no controllers here to create one.
        for workload in workloads(&yaml) {
            let template = &workload["spec"]["template"];
            let pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": format!("{}-0", workload["metadata"]["name"].as_str().unwrap_or("x")),
                    "namespace": "flotilla-system",
                    "labels": template["metadata"]["labels"],
                },
                "spec": template["spec"],
            });
            let pod_yaml = serde_json::to_string(&pod).expect("serialize the pod");
            dry_run(
                &kubectl,
                &kubeconfig,
                &format!("{what}: the pod of {}", name_of(&workload)),
                &pod_yaml,
            );
        }
    }
    for file in LOOSE_FILES {
        let yaml = std::fs::read_to_string(repo_root().join(file)).expect("read manifest");
        dry_run(&kubectl, &kubeconfig, file, &yaml);
        checked += 1;
    }
    assert_eq!(checked, 7);

    // Dry-run wrote nothing: the namespace holds no workload.
    let left = run_ok(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "get",
                "deployments,statefulsets,secrets,roles",
                "-n",
                "flotilla-system",
                "-o",
                "name",
            ]),
        "list what the dry-runs left",
    );
    assert_eq!(left.trim(), "", "dry-runs created objects");
}

// ---------------------------------------------------------------------------------------------
// The chart on its own

#[test]
fn chart_passes_helm_lint() {
    let chart = repo_root().join("deploy/chart");
    for strict in [false, true] {
        for set in [&[][..], CHART_SHARDED, CHART_SINGLE_FROM_VALUES] {
            let mut cmd = Command::new(testbin("helm"));
            cmd.arg("lint").arg(&chart);
            if strict {
                cmd.arg("--strict");
            }
            for s in set {
                cmd.args(["--set", s]);
            }
            let out = run_ok(&mut cmd, &format!("helm lint strict={strict} {set:?}"));
            assert!(out.contains("0 chart(s) failed"), "{out}");
        }
    }
}

#[test]
fn chart_renders_a_deployment_or_a_statefulset_of_shards() {
    let find = |yaml: &str, kind: &str| -> Vec<Value> {
        objects(yaml)
            .into_iter()
            .filter(|o| o["kind"] == kind)
            .collect()
    };
    let args = |workload: &Value| -> Vec<String> {
        workload["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg is a string").to_string())
            .collect()
    };

    let default = helm_template(&[]);
    let deployments = find(&default, "Deployment");
    assert_eq!(deployments.len(), 1, "{default}");
    assert!(find(&default, "StatefulSet").is_empty());
    assert!(find(&default, "ServiceMonitor").is_empty());
    assert_eq!(deployments[0]["spec"]["replicas"], 2);
    let default_args = args(&deployments[0]);
    assert!(default_args.contains(&"--leader-elect".to_string()));
    assert!(!default_args.iter().any(|a| a.starts_with("--shards")));
    assert!(!default_args.iter().any(|a| a.starts_with("--webhook")));

    let sharded = helm_template(CHART_SHARDED);
    let sets = find(&sharded, "StatefulSet");
    assert_eq!(sets.len(), 1, "{sharded}");
    assert!(find(&sharded, "Deployment").is_empty());
    assert_eq!(sets[0]["spec"]["replicas"], 3);
    let sharded_args = args(&sets[0]);
    for expected in [
        "--shards=3",
        "--leader-elect",
        "--lease-name=fleet",
        "--lease-namespace=flotilla-system",
        "--webhook-secret-file=/etc/flotilla/webhook/secret",
        "--management-cluster=mgmt",
        "--path=fleet",
        "--classify-interval=2m",
    ] {
        assert!(
            sharded_args.contains(&expected.to_string()),
            "{expected} missing from {sharded_args:?}"
        );
    }
    let headless: Vec<Value> = find(&sharded, "Service")
        .into_iter()
        .filter(|s| s["spec"]["clusterIP"] == "None")
        .collect();
    assert_eq!(headless.len(), 1, "{sharded}");
    assert_eq!(
        headless[0]["metadata"]["name"], sets[0]["spec"]["serviceName"],
        "the StatefulSet's serviceName is its headless Service"
    );

    let with_monitor = helm_template(&["metrics.serviceMonitor.enabled=true"]);
    let monitors = find(&with_monitor, "ServiceMonitor");
    assert_eq!(monitors.len(), 1);
    assert_eq!(monitors[0]["spec"]["endpoints"][0]["port"], "http");

    // Replicas without a Lease would all sync the fleet: refused.
    let out = Command::new(testbin("helm"))
        .args(["template", "flotilla"])
        .arg(repo_root().join("deploy/chart"))
        .args([
            "--set",
            "replicas=2",
            "--set",
            "leaderElection.enabled=false",
        ])
        .output()
        .expect("run helm");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs leaderElection.enabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Values from the chart become a Secret; the token reaches the pod only through the env.
    let single = helm_template(CHART_SINGLE_FROM_VALUES);
    let secrets = find(&single, "Secret");
    assert_eq!(secrets.len(), 1, "{single}");
    let keys: BTreeSet<&str> = secrets[0]["data"]
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["token", "ssh-key", "known_hosts"]));
    assert!(
        !single.contains("placeholder-token"),
        "the token is in clear"
    );
    let deployment = &find(&single, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert!(!args(deployment).iter().any(|a| a.contains("lease")));
}

// ---------------------------------------------------------------------------------------------
// Container arguments against the binary

/// The long flags and `FLOTILLA_*` env names `flotilla run --help` lists.
fn run_help() -> (BTreeSet<String>, BTreeSet<String>) {
    let help = run_ok(
        Command::new(flotilla_bin()).args(["run", "--help"]),
        "flotilla run --help",
    );
    let mut flags = BTreeSet::new();
    let mut envs = BTreeSet::new();
    for token in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        if let Some(rest) = token.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                flags.insert(format!("--{name}"));
            }
        }
        if let Some(rest) = token.strip_prefix("FLOTILLA_") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            envs.insert(format!("FLOTILLA_{name}"));
        }
    }
    assert!(
        flags.contains("--repo") && envs.contains("FLOTILLA_REPO"),
        "unexpected help text:\n{help}"
    );
    (flags, envs)
}

/// The ENV NAME=VALUE pairs of the Dockerfile's runtime (last) stage.
fn dockerfile_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let stages = dockerfile_stages(&dockerfile());
    let runtime = stages.last().expect("a runtime stage");
    for (keyword, rest) in &runtime.steps {
        if keyword == "ENV" {
            for pair in rest.split_whitespace() {
                if let Some((k, v)) = pair.split_once('=') {
                    env.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    env
}

#[test]
fn container_args_are_flags_of_flotilla_run() {
    let (flags, envs) = run_help();
    let image_env = dockerfile_env();
    // Read by flotilla itself, not through clap: FLOTILLA_GIT_TOKEN (never a flag), POD_NAME.
    let not_flags = ["FLOTILLA_GIT_TOKEN"];

    let mut problems = Vec::new();
    for name in image_env.keys().filter(|k| k.starts_with("FLOTILLA_")) {
        if !envs.contains(name) && !not_flags.contains(&name.as_str()) {
            problems.push(format!(
                "deploy/Dockerfile: ENV {name} is no env of `flotilla run`"
            ));
        }
    }
    let mut workloads_seen = 0;
    for (what, yaml) in renders() {
        for workload in workloads(&yaml) {
            workloads_seen += 1;
            let at = format!("{what}: {}", name_of(&workload));
            let pod = &workload["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            let mounts: Vec<&str> = container["volumeMounts"]
                .as_array()
                .map(|m| m.iter().filter_map(|m| m["mountPath"].as_str()).collect())
                .unwrap_or_default();
            let args: Vec<&str> = container["args"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if args.first() != Some(&"run") {
                problems.push(format!("{at}: args do not start with `run`: {args:?}"));
            }
            for arg in args.iter().skip(1) {
                let (flag, value) = arg.split_once('=').unwrap_or((arg, ""));
                if !flag.starts_with("--") {
                    problems.push(format!("{at}: {arg:?} is not a --flag[=value]"));
                } else if !flags.contains(flag) {
                    problems.push(format!("{at}: {flag} is not a flag of `flotilla run`"));
                }
                // A path the daemon reads or writes lies on a mounted volume.
                if value.starts_with('/') && !mounts.iter().any(|m| value.starts_with(m)) {
                    problems.push(format!("{at}: {arg} is on no volume (mounts {mounts:?})"));
                }
            }
            for env in container["env"].as_array().into_iter().flatten() {
                let name = env["name"].as_str().unwrap_or("");
                if name.starts_with("FLOTILLA_")
                    && !envs.contains(name)
                    && !not_flags.contains(&name)
                {
                    problems.push(format!("{at}: env {name} is no env of `flotilla run`"));
                }
            }
            // The image's HOME and TMPDIR are writable volumes (the root filesystem is not).
            for var in ["HOME", "TMPDIR"] {
                let path = image_env.get(var).map(String::as_str).unwrap_or("");
                if !mounts.contains(&path) {
                    problems.push(format!("{at}: the image's {var}={path} is not a volume"));
                }
            }
            check_pod_security(&at, pod, &mut problems);
        }
    }
    assert_eq!(workloads_seen, 5);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The settings the issue asks of every flotilla pod, beyond what Pod Security checks.
fn check_pod_security(at: &str, pod: &Value, problems: &mut Vec<String>) {
    let container = &pod["containers"][0];
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            problems.push(format!("{at}: {what}"));
        }
    };
    expect(
        pod["securityContext"]["runAsNonRoot"] == true,
        "runAsNonRoot",
    );
    expect(
        pod["securityContext"]["runAsUser"] == 65532,
        "runAsUser 65532",
    );
    expect(
        pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
        "seccomp RuntimeDefault",
    );
    let sc = &container["securityContext"];
    expect(
        sc["readOnlyRootFilesystem"] == true,
        "readOnlyRootFilesystem",
    );
    expect(
        sc["allowPrivilegeEscalation"] == false,
        "no privilege escalation",
    );
    expect(
        sc["capabilities"]["drop"] == json!(["ALL"]),
        "drop ALL capabilities",
    );
    expect(
        container["livenessProbe"]["httpGet"] == json!({"path": "/healthz", "port": "http"}),
        "liveness probe on /healthz",
    );
    expect(
        container["readinessProbe"]["httpGet"] == json!({"path": "/readyz", "port": "http"}),
        "readiness probe on /readyz",
    );
    expect(
        container["ports"] == json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]),
        "port 8080 named http",
    );
    expect(
        container["env"].as_array().into_iter().flatten().any(|e| {
            e["name"] == "POD_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        }),
        "POD_NAME from the downward API",
    );
    expect(
        container["resources"]["requests"].is_object(),
        "resource requests",
    );
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile and scripts/build-release.sh

fn dockerfile() -> String {
    std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).expect("read deploy/Dockerfile")
}

/// Instructions as (KEYWORD, rest), continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((keyword.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

/// One `FROM` and what follows it.
#[derive(Debug, Default)]
struct Stage {
    image: String,
    name: String,
    /// (keyword, rest) in order.
    steps: Vec<(String, String)>,
}

/// The stages, with global ARG defaults substituted into FROM.
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (keyword, rest) in dockerfile_instructions(text) {
        match keyword.as_str() {
            "ARG" if stages.is_empty() => {
                if let Some((k, v)) = rest.split_once('=') {
                    args.insert(k.to_string(), v.to_string());
                }
            }
            "FROM" => {
                let mut image = rest.split_whitespace().next().unwrap_or("").to_string();
                for (k, v) in &args {
                    image = image.replace(&format!("${{{k}}}"), v);
                }
                let name = rest
                    .split_whitespace()
                    .skip_while(|w| !w.eq_ignore_ascii_case("as"))
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                stages.push(Stage {
                    image,
                    name,
                    steps: Vec::new(),
                });
            }
            _ => {
                if let Some(stage) = stages.last_mut() {
                    stage.steps.push((keyword, rest));
                }
            }
        }
    }
    stages
}

/// The `--only` part a RUN line builds with scripts/build-release.sh, if it runs it.
fn build_release_part(run: &str) -> Option<String> {
    let at = run.find("scripts/build-release.sh")?;
    let after: Vec<&str> = run[at..].split_whitespace().collect();
    let only = after.iter().position(|w| *w == "--only")?;
    after.get(only + 1).map(|p| p.to_string())
}

#[test]
fn dockerfile_builds_with_build_release_sh() {
    let text = dockerfile();
    let stages = dockerfile_stages(&text);
    let script =
        std::fs::read_to_string(repo_root().join("scripts/build-release.sh")).expect("read script");

    // The script's default parts, in order: what `scripts/build-release.sh` with no --only does.
    let defaults_line = script
        .lines()
        .find(|l| l.contains("parts=(") && l.contains("||"))
        .expect("build-release.sh sets its default parts");
    let defaults: Vec<&str> = defaults_line
        .split("parts=(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("parts=(...)")
        .split_whitespace()
        .collect();
    assert_eq!(defaults, ["flotilla", "tools", "manifest"]);
    assert!(
        script.contains("cargo build --release --locked"),
        "build-release.sh builds flotilla with `cargo build --release --locked`"
    );

    // Every scripts/ file build-release.sh uses, and which parts need it inside the image build.
    let needs: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "scripts/lib/pins.sh",
            &["flotilla", "tools", "manifest"][..],
        ),
        ("scripts/testbin.sh", &["tools"][..]),
    ]);
    let used: BTreeSet<String> = script
        .match_indices("$root/scripts/")
        .map(|(i, _)| {
            script[i + "$root/".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                .collect()
        })
        .collect();
    let listed: BTreeSet<String> = needs.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        used, listed,
        "files build-release.sh uses vs this test's table"
    );

    // Each part runs exactly once, in a stage that has COPYed what it needs.
    let mut ran = Vec::new();
    for stage in &stages {
        let mut copied: Vec<String> = Vec::new();
        for (keyword, rest) in &stage.steps {
            match keyword.as_str() {
                "COPY" if !rest.starts_with("--from") => {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    let (dest, sources) = words.split_last().expect("COPY src... dest");
                    for src in sources {
                        assert!(
                            repo_root().join(src).exists(),
                            "COPY {src}: not in the repository"
                        );
                        // Copied into a directory (dest ends in /) keeps the file name.
                        let placed = if dest.ends_with('/') && !src.ends_with('/') {
                            let file = Path::new(src).file_name().expect("file name");
                            format!("{dest}{}", file.to_string_lossy())
                        } else {
                            dest.to_string()
                        };
                        copied.push(placed.trim_start_matches("./").to_string());
                    }
                }
                "RUN" => {
                    if let Some(part) = build_release_part(rest) {
                        assert!(
                            copied.iter().any(|c| c == "scripts/build-release.sh"),
                            "stage {}: runs build-release.sh without COPYing it",
                            stage.name
                        );
                        for (file, parts) in &needs {
                            if parts.contains(&part.as_str()) {
                                assert!(
                                    copied.iter().any(|c| c == file),
                                    "stage {}: --only {part} needs {file} COPYed; has {copied:?}",
                                    stage.name
                                );
                            }
                        }
                        if part == "flotilla" {
                            for file in ["Cargo.toml", "Cargo.lock", "src/"] {
                                assert!(
                                    copied.iter().any(|c| c == file),
                                    "stage {}: cargo needs {file} COPYed; has {copied:?}",
                                    stage.name
                                );
                            }
                        }
                        ran.push((stage.name.clone(), part));
                    }
                }
                _ => {}
            }
        }
    }
    let parts: Vec<&str> = ran.iter().map(|(_, p)| p.as_str()).collect();
    let mut sorted = parts.clone();
    sorted.sort_unstable();
    let mut expected = defaults.clone();
    expected.sort_unstable();
    assert_eq!(
        sorted, expected,
        "the Dockerfile's RUN lines build each part of build-release.sh once: {ran:?}"
    );
    // The manifest is written where all three binaries are: after the tools, in the same stage,
    // with flotilla copied in from the stage that built it.
    let stage_of = |part: &str| {
        ran.iter()
            .find(|(_, p)| p == part)
            .map(|(s, _)| s.clone())
            .expect("part ran")
    };
    let manifest_stage = stages
        .iter()
        .find(|s| s.name == stage_of("manifest"))
        .expect("manifest stage");
    assert_eq!(stage_of("tools"), manifest_stage.name);
    assert!(
        manifest_stage.steps.iter().any(|(k, r)| k == "COPY"
            && r.starts_with(&format!("--from={}", stage_of("flotilla")))
            && r.contains("/out/bin/flotilla")),
        "the manifest stage copies flotilla in: {:?}",
        manifest_stage.steps
    );

    // Build images pinned to a full version.
    for stage in &stages[..stages.len() - 1] {
        let tag = stage.image.rsplit(':').next().unwrap_or("");
        let version = tag.split('-').next().unwrap_or("");
        assert!(
            version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
            "stage {}: image {} is not pinned to x.y.z",
            stage.name,
            stage.image
        );
    }

    // The runtime: distroless cc with the nonroot user, no shell (so no RUN), flotilla run.
    let runtime = stages.last().expect("a runtime stage");
    assert_eq!(runtime.image, "gcr.io/distroless/cc-debian12:nonroot");
    let step = |keyword: &str| -> Vec<&str> {
        runtime
            .steps
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    assert!(step("RUN").is_empty(), "distroless has no shell");
    assert_eq!(step("USER"), ["65532:65532"]);
    assert_eq!(step("ENTRYPOINT"), [r#"["/usr/local/bin/flotilla"]"#]);
    assert_eq!(step("CMD"), [r#"["run"]"#]);
    // zlib, the one library flotilla links that distroless cc lacks (see the release test's
    // ldd check), comes from the Rust stage and is on the loader's path.
    assert!(
        text.contains("/out/lib/libz.so.1")
            && step("COPY")
                .iter()
                .any(|c| c.contains("/out/lib/") && c.contains("/usr/local/lib/flotilla/")),
        "libz.so.1 is copied into the runtime"
    );
    assert_eq!(
        dockerfile_env().get("LD_LIBRARY_PATH").map(String::as_str),
        Some("/usr/local/lib/flotilla")
    );

    // The build context lets in what the stages COPY.
    let ignore = std::fs::read_to_string(repo_root().join("deploy/Dockerfile.dockerignore"))
        .expect("read deploy/Dockerfile.dockerignore");
    for top in ["Cargo.toml", "Cargo.lock", "src/", "scripts/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == format!("!{top}")),
            "the .dockerignore excludes {top}"
        );
    }
}

/// `NAME=value` of scripts/lib/pins.sh.
fn pin(name: &str) -> String {
    let pins =
        std::fs::read_to_string(repo_root().join("scripts/lib/pins.sh")).expect("read pins.sh");
    pins.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} is not pinned in scripts/lib/pins.sh"))
        .to_string()
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Expensive: a release build (incremental in a warm target directory; from scratch it takes
/// many minutes on 2 cores) and, on a fresh machine, helm and kustomize from the Go proxy.
#[test]
fn build_release_script_produces_binaries_that_run() {
    // The target directory this test was built in (CARGO_TARGET_TMPDIR is <target>/tmp): the
    // release build shares its dependencies with everything else built there.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    let out = tempfile::Builder::new()
        .prefix("flotilla-release-")
        .tempdir()
        .expect("temporary directory");
    let mut cmd = Command::new(repo_root().join("scripts/build-release.sh"));
    cmd.arg(out.path())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("FLOTILLA_TESTBIN", testbin_dir());
    // Without what cargo sets for a test process (CARGO_PKG_*, CARGO_MANIFEST_*, its
    // LD_LIBRARY_PATH, ...): the nested cargo then sees the environment a release build from a
    // shell sees, and reuses (and leaves) the same release artifacts instead of rebuilding them.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let cargo_set = key == "CARGO"
            || key == "LD_LIBRARY_PATH"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_EXE_",
                "CARGO_CRATE_",
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix));
        if cargo_set {
            cmd.env_remove(key.as_ref());
        }
    }
    let started = Instant::now();
    run_ok(&mut cmd, "scripts/build-release.sh");
    eprintln!(
        "scripts/build-release.sh took {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let bin = out.path().join("bin");
    let version = |name: &str, args: &[&str]| -> String {
        run_ok(
            Command::new(bin.join(name)).args(args),
            &format!("{name} {args:?}"),
        )
        .trim()
        .to_string()
    };
    assert_eq!(
        version("flotilla", &["--version"]),
        format!("flotilla {}", env!("CARGO_PKG_VERSION"))
    );
    // helm reports major.minor only when built with `go install` (no release ldflags).
    let helm_pin = pin("HELM_VERSION");
    let helm = version("helm", &["version", "--template", "{{.Version}}"]);
    assert!(
        helm_pin.starts_with(&helm) && helm.starts_with("v4."),
        "helm says {helm}, pinned {helm_pin}"
    );
    assert_eq!(version("kustomize", &["version"]), pin("KUSTOMIZE_VERSION"));

    // The manifest: every binary with its version and the sha256 of the file shipped.
    let manifest =
        std::fs::read_to_string(out.path().join("manifest.txt")).expect("read manifest.txt");
    let lines: BTreeMap<&str, (&str, &str)> = manifest
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "manifest line {l:?}");
            (f[0], (f[1], f[2]))
        })
        .collect();
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        ["flotilla", "helm", "kustomize"]
    );
    let pins = BTreeMap::from([
        ("flotilla", env!("CARGO_PKG_VERSION").to_string()),
        ("helm", helm_pin),
        ("kustomize", pin("KUSTOMIZE_VERSION")),
    ]);
    for (name, (version, sha)) in &lines {
        assert_eq!(*version, pins[name], "{name}'s version in the manifest");
        assert_eq!(*sha, sha256_hex(&bin.join(name)), "{name}'s sha256");
    }
    // Built in the target directory given: the release binary there is the one shipped.
    assert_eq!(
        sha256_hex(&target_dir.join("release/flotilla")),
        lines["flotilla"].1,
        "build-release.sh did not use CARGO_TARGET_DIR"
    );

    // What the runtime image must provide: distroless cc has glibc, libgcc and OpenSSL 3; zlib
    // is copied in by the Dockerfile. A new shared library fails here first.
    let ldd = run_ok(
        Command::new("ldd").arg(bin.join("flotilla")),
        "ldd flotilla",
    );
    let provided = [
        "linux-vdso.so.1",
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libssl.so.3",
        "libcrypto.so.3",
        "libz.so.1",
    ];
    for line in ldd.lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        let base = Path::new(lib)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            provided.contains(&lib) || base.starts_with("ld-linux"),
            "flotilla links {lib}, which the runtime image does not provide:\n{ldd}"
        );
    }
    // helm and kustomize are static (CGO_ENABLED=0): nothing to provide.
    for name in ["helm", "kustomize"] {
        let out = Command::new("ldd")
            .arg(bin.join(name))
            .output()
            .expect("run ldd");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "{name} is dynamically linked:\n{text}"
        );
    }
}
