//! Every category of validation error: each case changes one file of a small valid repo and
//! asserts the file, the line and the message. Plus the CLI contract (exit codes, FILE:LINE).

use flotilla::config::{self, Diagnostic};
use flotilla::source::FileTree;

const CLUSTERS: &str = "\
apiVersion: flotilla.dev/v1alpha1
kind: Cluster
metadata:
  name: alpha
  labels: {env: prod}
---
apiVersion: flotilla.dev/v1alpha1
kind: Cluster
metadata:
  name: beta
  labels: {env: dev}
";

const PROFILE: &str = "\
apiVersion: flotilla.dev/v1alpha1
kind: ClusterProfile
metadata:
  name: base
spec:
  clusterSelector: env=prod
  policyRefs:
  - {kind: ConfigMap, name: manifests}
  - {path: manifests/app}
";

const SOURCE: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: manifests
data:
  ns.yaml: |
    apiVersion: v1
    kind: Namespace
    metadata: {name: team-a}
";

const CLASSIFIER: &str = "\
apiVersion: flotilla.dev/v1alpha1
kind: Classifier
metadata:
  name: new
spec:
  classifierLabels: [{key: k8s, value: new}]
  kubernetesVersionConstraints:
  - {version: 1.30.0, comparison: GreaterThanOrEqualTo}
";

fn base() -> Vec<(&'static str, String)> {
    vec![
        ("clusters/clusters.yaml", CLUSTERS.to_string()),
        ("profiles/base.yaml", PROFILE.to_string()),
        ("sources/manifests.yaml", SOURCE.to_string()),
        ("classifiers/new.yaml", CLASSIFIER.to_string()),
        (
            "manifests/app/deploy.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n".to_string(),
        ),
    ]
}

fn load_with(changes: &[(&'static str, &str)]) -> Result<config::ConfigRepo, Vec<Diagnostic>> {
    let mut files = base();
    for (path, text) in changes {
        files.retain(|(p, _)| p != path);
        files.push((path, text.to_string()));
    }
    let mut tree = FileTree::new();
    for (path, text) in files {
        tree.insert_file(path, text.into_bytes());
    }
    config::load(tree).map_err(|d| d.0)
}

fn profile(spec: &str) -> String {
    format!(
        "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: extra\nspec:\n{spec}"
    )
}

#[test]
fn the_base_repo_is_valid() {
    let repo = load_with(&[]).expect("base repo is valid");
    assert_eq!(repo.clusters.len(), 2);
    assert_eq!(repo.profiles.len(), 1);
}

/// (name, file changed, its new content, expected file, expected line, expected message part)
struct Case {
    name: &'static str,
    file: &'static str,
    text: String,
    want_file: &'static str,
    want_line: usize,
    want: &'static str,
}

fn case(
    name: &'static str,
    file: &'static str,
    text: impl Into<String>,
    want_line: usize,
    want: &'static str,
) -> Case {
    Case {
        name,
        file,
        text: text.into(),
        want_file: file,
        want_line,
        want,
    }
}

fn cases() -> Vec<Case> {
    let p = "profiles/extra.yaml";
    vec![
        // YAML that does not parse.
        case("yaml syntax", p, "apiVersion: [unclosed\nkind: x\n", 2, ""),
        case(
            "yaml syntax in second document",
            "clusters/more.yaml",
            "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n---\nkey: \"unterminated\n",
            5,
            "",
        ),
        case(
            "duplicate yaml key",
            p,
            profile("  tier: 1\n  tier: 2\n"),
            7,
            "duplicate",
        ),
        // Unexpected apiVersion/kind.
        case(
            "unexpected kind in folder",
            p,
            "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n",
            2,
            "unexpected flotilla.dev/v1alpha1 Cluster in profiles/",
        ),
        case(
            "unexpected apiVersion",
            "clusters/more.yaml",
            "apiVersion: flotilla.dev/v2\nkind: Cluster\nmetadata: {name: x}\n",
            2,
            "unexpected flotilla.dev/v2 Cluster in clusters/",
        ),
        case(
            "sveltos document",
            p,
            "apiVersion: config.projectsveltos.io/v1beta1\nkind: ClusterProfile\nmetadata: {name: x}\n",
            2,
            "Sveltos documents are not accepted yet",
        ),
        case(
            "not a mapping",
            p,
            "- a\n- b\n",
            1,
            "expected a flotilla.dev/v1alpha1 ClusterProfile document",
        ),
        // Unknown field, wrong type, missing field.
        case(
            "unknown field",
            p,
            profile("  clusterSelectr: env=prod\n"),
            6,
            "unknown field `clusterSelectr`",
        ),
        case(
            "unknown field in nested ref",
            p,
            profile("  policyRefs:\n  - {kind: ConfigMap, name: manifests, nmespace: x}\n"),
            7,
            "unknown field `nmespace`",
        ),
        case(
            "wrong type",
            p,
            profile("  tier: high\n"),
            6,
            "tier: invalid u32",
        ),
        case(
            "wrong enum value",
            p,
            profile("  syncMode: Sometimes\n"),
            6,
            "Sometimes",
        ),
        case(
            "missing field",
            p,
            "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {name: x}\n",
            3,
            "missing field `spec`",
        ),
        case(
            "cluster spec is free-form but kubeconfig is not",
            "clusters/more.yaml",
            "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  anything: {goes: here}\n  kubeconfig: {fil: x}\n",
            6,
            "unknown field `fil`",
        ),
        case(
            "bad maxUpdate",
            p,
            profile("  maxUpdate: 150%\n"),
            6,
            "between 1% and 100%",
        ),
        // Duplicate names.
        case(
            "duplicate cluster",
            "clusters/more.yaml",
            "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: alpha\n",
            4,
            "duplicate Cluster name \"alpha\" (first defined at clusters/clusters.yaml:4)",
        ),
        case(
            "duplicate profile",
            p,
            "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: base\nspec: {}\n",
            4,
            "duplicate ClusterProfile name \"base\"",
        ),
        case(
            "duplicate source",
            "sources/more.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: manifests\n  namespace: default\n",
            4,
            "duplicate source ConfigMap default/manifests",
        ),
        case(
            "invalid name",
            p,
            "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: Bad_Name\nspec: {}\n",
            4,
            "not a valid Kubernetes name",
        ),
        case(
            "invalid label",
            "clusters/more.yaml",
            "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\n  labels:\n    env: -bad-\n",
            6,
            "invalid label value",
        ),
        // Selectors, both forms.
        case(
            "bad selector string",
            p,
            profile("  clusterSelector: \"env in (a\"\n"),
            6,
            "clusterSelector:",
        ),
        case(
            "bad selector object",
            p,
            profile(
                "  clusterSelector:\n    matchExpressions:\n    - {key: env, operator: Near, values: [a]}\n",
            ),
            7,
            "Near",
        ),
        case(
            "unknown field in selector object",
            p,
            profile("  clusterSelector:\n    matchLabel: {env: prod}\n"),
            7,
            "unknown field `matchLabel`",
        ),
        // Semver and comparison.
        case(
            "invalid semver",
            "classifiers/new.yaml",
            CLASSIFIER.replace("1.30.0", "1.thirty"),
            8,
            "invalid semantic version \"1.thirty\"",
        ),
        case(
            "invalid comparison",
            "classifiers/new.yaml",
            CLASSIFIER.replace("GreaterThanOrEqualTo", "Newer"),
            8,
            "Newer",
        ),
        // Dangling references.
        case(
            "policyRef to missing source",
            p,
            profile("  policyRefs:\n  - {kind: ConfigMap, name: nope}\n"),
            7,
            "policyRefs: ConfigMap default/nope not found in sources/",
        ),
        case(
            "policyRef to missing path",
            p,
            profile("  policyRefs:\n  - {path: manifests/nope}\n"),
            7,
            "does not exist",
        ),
        case(
            "dependsOn missing profile",
            p,
            profile("  dependsOn: [base, ghost]\n"),
            6,
            "dependsOn: profile \"ghost\" is not in profiles/",
        ),
        case(
            "clusterRefs unknown cluster",
            p,
            profile("  clusterRefs:\n  - alpha\n  - gamma\n"),
            8,
            "clusterRefs: cluster \"gamma\" is not in clusters/",
        ),
        case(
            "duplicate identifier",
            p,
            profile(
                "  templateResourceRefs:\n  - resource: {apiVersion: v1, kind: ConfigMap, name: a}\n    identifier: Thing\n  - resource: {apiVersion: v1, kind: ConfigMap, name: b}\n    identifier: Thing\n",
            ),
            10,
            "duplicate identifier \"Thing\"",
        ),
        // Paths that leave the repository.
        case(
            "path with dotdot",
            p,
            profile("  policyRefs:\n  - {path: ../outside}\n"),
            7,
            "leaves the config root",
        ),
        case(
            "absolute path",
            p,
            profile("  policyRefs:\n  - {path: /etc/passwd}\n"),
            7,
            "is absolute",
        ),
        // Templates that do not parse, with the template's own line.
        case(
            "helm values template syntax",
            p,
            profile(
                "  helmCharts:\n  - repositoryURL: https://charts.example.com\n    repositoryName: ex\n    chartName: ex/app\n    chartVersion: 1.0.0\n    releaseName: app\n    releaseNamespace: apps\n    values: |\n      a: 1\n      b: {{ cluster.metadata.name \n      c: 3\n",
            ),
            16,
            "template syntax error",
        ),
        case(
            "templated source syntax",
            "sources/more.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: t\n  annotations: {flotilla.dev/template: \"true\"}\ndata:\n  a.yaml: |\n    kind: A\n    x: {% if %}\n",
            9,
            "template syntax error",
        ),
        case(
            "non-template source with invalid yaml",
            "sources/more.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: t\ndata:\n  a.yaml: |\n    kind: A\n    x: [1,\n",
            8,
            "ConfigMap default/t data key \"a.yaml\"",
        ),
        case(
            "referenced source that is not manifests",
            "sources/manifests.yaml",
            SOURCE.replace("kind: Namespace", "kynd: Namespace"),
            7,
            "ConfigMap default/manifests data key \"ns.yaml\": document 1: has no kind",
        ),
        case(
            "path reference to a file that is not a manifest",
            "manifests/app/deploy.yaml",
            "just: values\n",
            1,
            "document 1: has no apiVersion",
        ),
        // Other invalid values.
        case(
            "bad chart version",
            p,
            profile(
                "  helmCharts:\n  - repositoryURL: ftp://charts.example.com\n    repositoryName: ex\n    chartName: ex/app\n    chartVersion: latest\n    releaseName: app\n    releaseNamespace: apps\n",
            ),
            7,
            "chartVersion",
        ),
        case(
            "secret with bad base64 names no value",
            "sources/more.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  a.yaml: \"not*base64\"\n",
            5,
            "Secret data key \"a.yaml\" is not base64",
        ),
    ]
}

#[test]
fn every_error_category_names_file_line_and_message() {
    let mut failures = Vec::new();
    for c in cases() {
        let diags = match load_with(&[(c.file, &c.text)]) {
            Ok(_) => {
                failures.push(format!("{}: expected an error, repo was valid", c.name));
                continue;
            }
            Err(d) => d,
        };
        let hit = diags
            .iter()
            .any(|d| d.file == c.want_file && d.line == c.want_line && d.message.contains(c.want));
        if !hit {
            failures.push(format!(
                "{}: want {}:{}: ..{}.., got:\n    {}",
                c.name,
                c.want_file,
                c.want_line,
                c.want,
                diags
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_dependency_cycle_is_named() {
    let a = "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: a\nspec:\n  dependsOn: [b]\n";
    let b = "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: b\nspec:\n  dependsOn: [c]\n";
    let c = "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: c\nspec:\n  dependsOn: [a]\n";
    let diags = load_with(&[
        ("profiles/a.yaml", a),
        ("profiles/b.yaml", b),
        ("profiles/c.yaml", c),
    ])
    .expect_err("cycle");
    let cycles: Vec<String> = diags
        .iter()
        .filter(|d| d.message.contains("cycle"))
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cycles,
        vec!["profiles/a.yaml:4: dependsOn cycle: a -> b -> c -> a".to_string()]
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let diags = load_with(&[
        (
            "profiles/extra.yaml",
            &profile("  dependsOn: [ghost]\n  clusterRefs: [gamma]\n"),
        ),
        (
            "clusters/more.yaml",
            "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: alpha}\n",
        ),
        ("classifiers/new.yaml", &CLASSIFIER.replace("1.30.0", "x")),
    ])
    .expect_err("several errors");
    assert!(diags.len() >= 4, "{diags:?}");
    let mut sorted = diags.clone();
    sorted.sort();
    assert_eq!(diags, sorted, "diagnostics are sorted by file and line");
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_repo_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    for (path, text) in base() {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }
    std::fs::write(
        dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n",
    )
    .expect("write");
    std::os::unix::fs::symlink("../../../secret.yaml", root.join("manifests/app/leak.yaml"))
        .expect("symlink");
    std::fs::write(
        root.join("profiles/extra.yaml"),
        profile("  policyRefs:\n  - {path: manifests/app}\n"),
    )
    .expect("write");
    let tree = flotilla::source::read_dir(&root).expect("read");
    let diags = config::load(tree).expect_err("escaping symlink").0;
    assert!(
        diags.iter().any(|d| d.file == "profiles/extra.yaml"
            && d.line == 7
            && d.message.contains("points outside the config root")),
        "{diags:?}"
    );
}

#[test]
fn cli_validate_exit_codes_and_format() {
    let bin = env!("CARGO_BIN_EXE_flotilla");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/example-repo");
    let ok = std::process::Command::new(bin)
        .args(["validate", "--path", example])
        .output()
        .expect("run flotilla");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        stdout.starts_with("valid: 4 clusters, 10 profiles, 2 classifiers"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in base() {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }
    std::fs::write(
        dir.path().join("profiles/extra.yaml"),
        profile("  dependsOn: [ghost]\n"),
    )
    .expect("write");
    let bad = std::process::Command::new(bin)
        .current_dir(dir.path())
        .args(["validate"])
        .output()
        .expect("run flotilla");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("profiles/extra.yaml:6: dependsOn: profile \"ghost\" is not in profiles/"),
        "{stderr}"
    );
}

#[test]
fn values_from_sources_and_paths_are_helm_values_not_manifests() {
    let chart = "  helmCharts:\n  - repositoryURL: oci://registry.example.com/charts\n    repositoryName: ex\n    chartName: app\n    chartVersion: 1.2.3\n    releaseName: app\n    releaseNamespace: apps\n    valuesFrom:\n    - {kind: ConfigMap, name: app-values}\n    - {path: values/app.yaml}\n";
    let values_source = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-values}\ndata:\n  values.yaml: |\n    replicas: 2\n";
    load_with(&[
        ("profiles/extra.yaml", &profile(chart)),
        ("sources/values.yaml", values_source),
        ("values/app.yaml", "image: {tag: v1}\n"),
    ])
    .expect("values are valid");

    let diags = load_with(&[
        ("profiles/extra.yaml", &profile(chart)),
        ("sources/values.yaml", values_source),
        ("values/app.yaml", "- a list\n- is not values\n"),
    ])
    .expect_err("a list is not Helm values");
    assert!(
        diags
            .iter()
            .any(|d| d.file == "values/app.yaml" && d.message.contains("values must be a mapping")),
        "{diags:?}"
    );
}

#[test]
fn registry_credentials_in_sources_are_checked_others_are_read_from_the_management_cluster() {
    let chart = |secret: &str| {
        profile(&format!(
            "  helmCharts:\n  - repositoryURL: oci://registry.example.com/charts\n    repositoryName: ex\n    chartName: app\n    chartVersion: 1.2.3\n    releaseName: app\n    releaseNamespace: apps\n    registryCredentialsConfig:\n      credentials: {{name: {secret}}}\n"
        ))
    };
    let creds =
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData:\n  username: reader\n";
    // In sources/: its keys are checked.
    let diags = load_with(&[
        ("profiles/extra.yaml", &chart("creds")),
        ("sources/creds.yaml", creds),
    ])
    .expect_err("the Secret in sources/ has no password");
    assert!(
        diags.iter().any(|d| d.file == "profiles/extra.yaml"
            && d.message.contains(
                "registryCredentialsConfig: Secret default/creds has no data key \"password\""
            )),
        "{diags:?}"
    );
    // Not in sources/: read from the management cluster at sync time, not a validation error.
    load_with(&[
        ("profiles/extra.yaml", &chart("in-management")),
        ("sources/creds.yaml", creds),
    ])
    .expect("a Secret not in sources/ is looked up in the management cluster");
}
