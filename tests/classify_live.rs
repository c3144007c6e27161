//! Classifiers over live facts, end to end: a `deployedResourceConstraint` or a
//! `kubernetesVersionConstraints` labels only the clusters whose live state matches, a profile
//! selected through that label lands only there, the running daemon follows changes on its
//! classify timer, and label ownership and conflicts are reported in both notes and `status`.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use support::ControlPlanes;
use support::daemon::{Daemon, wait_until};
use support::fleet::{
    ConfigRepo, clusters_yaml, configmap, configmap_yaml, profile_yaml, sync_once,
};

const CLASSIFIER: &str = "---\napiVersion: flotilla.dev/v1alpha1\nkind: Classifier\nmetadata: {name: team-namespaces}\nspec:\n  classifierLabels: [{key: has-teams, value: \"true\"}]\n  deployedResourceConstraint:\n    resourceSelectors:\n    - {group: \"\", version: v1, kind: Namespace, labelFilters: [{key: team, operation: Has}]}\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_classifier_labels_only_the_cluster_with_the_objects() {
    let fleet = ControlPlanes::builder()
        .names(&["with-teams", "without"])
        .start();

    // Only `with-teams` has a Namespace labelled `team`; `without` has one with other labels.
    for (cluster, labels) in [
        ("with-teams", ("team", "payments")),
        ("without", ("app", "x")),
    ] {
        let namespaces: Api<Namespace> = Api::all(fleet.client(cluster).await);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("payments".into()),
                labels: Some([(labels.0.to_string(), labels.1.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("{cluster}: create namespace: {e}"));
    }

    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("with-teams", "env: prod"), ("without", "env: prod")]),
    )
    .write("classifiers/teams.yaml", CLASSIFIER)
    .write(
        "manifests/cm.yaml",
        &configmap_yaml("default", "team-tools", &[("k", "v")]),
    )
    .write(
        "profiles/p.yaml",
        &profile_yaml(
            "team-tools",
            "  clusterSelector: {matchLabels: {has-teams: \"true\"}}\n  policyRefs:\n  - {path: manifests/cm.yaml}\n",
        ),
    );
    let commit = repo.commit("classify by namespaces");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );

    let present = |cluster: &'static str| {
        let fleet = &fleet;
        async move {
            configmap(&fleet.client(cluster).await, "default", "team-tools")
                .await
                .is_some()
        }
    };
    assert!(present("with-teams").await, "note:\n{}", run.stdout);
    assert!(!present("without").await, "note:\n{}", run.stdout);

    let state = repo.state(&commit);
    let clusters = &state["clusters"];
    assert_eq!(
        clusters["with-teams"]["labels"]["has-teams"], "true",
        "{state}"
    );
    assert!(
        clusters["without"]["labels"].get("has-teams").is_none(),
        "{state}"
    );
    assert_eq!(clusters["without"]["labels"]["env"], "prod", "{state}");
}

/// `v1.34.4` → `1.34.4` (the numbers a constraint is written with).
fn numbers(version: &str) -> String {
    version
        .trim_start_matches('v')
        .split(['-', '+'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A Classifier document that sets `key: value` when `constraints` (a flow list of
/// kubernetesVersionConstraints) hold.
fn version_classifier(name: &str, key: &str, value: &str, constraints: &str) -> String {
    format!(
        "---\napiVersion: flotilla.dev/v1alpha1\nkind: Classifier\nmetadata: {{name: {name}}}\nspec:\n  classifierLabels: [{{key: {key}, value: \"{value}\"}}]\n  kubernetesVersionConstraints: {constraints}\n"
    )
}

/// A profile deploying ConfigMap `default/<name>` to the clusters with label `key=value`.
fn labelled_profile(repo: &ConfigRepo, name: &str, key: &str, value: &str) {
    repo.write(
        &format!("manifests/{name}.yaml"),
        &configmap_yaml("default", name, &[("k", "v")]),
    )
    .write(
        &format!("profiles/{name}.yaml"),
        &profile_yaml(
            name,
            &format!(
                "  clusterSelector: {{matchLabels: {{{key}: \"{value}\"}}}}\n  policyRefs:\n  - {{path: manifests/{name}.yaml}}\n"
            ),
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_classifier_labels_only_the_cluster_of_that_version() {
    let fleet = ControlPlanes::builder()
        .names(&["old", "new"])
        .versions(&["1.34", "1.37"])
        .start();
    let old = numbers(&fleet.cluster("old").version);
    let new = numbers(&fleet.cluster("new").version);
    // The launcher's version is what the apiserver reports.
    for name in ["old", "new"] {
        let live = fleet
            .client(name)
            .await
            .apiserver_version()
            .await
            .unwrap_or_else(|e| panic!("{name}: /version: {e}"));
        assert_eq!(live.git_version, fleet.cluster(name).version, "{name}");
    }
    assert!(
        old.starts_with("1.34.") && new.starts_with("1.37."),
        "{old} {new}"
    );
    eprintln!("versions: old {old}, new {new}");

    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("old", "env: prod"), ("new", "env: prod")]),
    )
    .write(
        "classifiers/versions.yaml",
        &[
            version_classifier(
                "minor-1-34",
                "k8s-minor",
                "1-34",
                "[{version: 1.34.0, comparison: GreaterThanOrEqualTo}, {version: 1.35.0, comparison: LessThan}]",
            ),
            // At the exact boundary: old's own version.
            version_classifier(
                "exact-old",
                "exact",
                "old",
                &format!("[{{version: {old}, comparison: Equal}}]"),
            ),
            version_classifier(
                "below-old",
                "below-old",
                "yes",
                &format!("[{{version: {old}, comparison: LessThan}}]"),
            ),
            version_classifier(
                "at-most-old",
                "at-most-old",
                "yes",
                &format!("[{{version: {old}, comparison: LessThanOrEqualTo}}]"),
            ),
            version_classifier(
                "above-old",
                "newer",
                "yes",
                &format!("[{{version: {old}, comparison: GreaterThan}}]"),
            ),
        ]
        .concat(),
    );
    labelled_profile(&repo, "only-1-34", "k8s-minor", "1-34");
    labelled_profile(&repo, "only-newer", "newer", "yes");
    let commit = repo.commit("classify by version");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );

    for (cluster, only_1_34, only_newer) in [("old", true, false), ("new", false, true)] {
        let client = fleet.client(cluster).await;
        assert_eq!(
            configmap(&client, "default", "only-1-34").await.is_some(),
            only_1_34,
            "{cluster}: only-1-34\n{}",
            run.stdout
        );
        assert_eq!(
            configmap(&client, "default", "only-newer").await.is_some(),
            only_newer,
            "{cluster}: only-newer\n{}",
            run.stdout
        );
    }

    let state = repo.state(&commit);
    let labels =
        |cluster: &str| -> serde_json::Value { state["clusters"][cluster]["labels"].clone() };
    assert_eq!(
        labels("old"),
        serde_json::json!({"env": "prod", "k8s-minor": "1-34", "exact": "old", "at-most-old": "yes"}),
        "{state:#}"
    );
    assert_eq!(
        labels("new"),
        serde_json::json!({"env": "prod", "newer": "yes"}),
        "{state:#}"
    );
    assert_eq!(
        state["clusters"]["old"]["labelSources"],
        serde_json::json!({
            "env": "inventory",
            "k8s-minor": "classifier:minor-1-34",
            "exact": "classifier:exact-old",
            "at-most-old": "classifier:at-most-old",
        }),
        "{state:#}"
    );
    assert_eq!(
        state["clusters"]["new"]["labelSources"],
        serde_json::json!({"env": "inventory", "newer": "classifier:above-old"}),
        "{state:#}"
    );
    let note = repo
        .note("refs/notes/flotilla", &commit)
        .expect("human note");
    assert!(
        note.contains("\n## old\nlabels from classifiers: at-most-old=yes (at-most-old), exact=old (exact-old), k8s-minor=1-34 (minor-1-34)\n"),
        "{note}"
    );
    assert!(
        note.contains("\n## new\nlabels from classifiers: newer=yes (above-old)\n"),
        "{note}"
    );
}

/// Namespace `name` with label `team`, in one cluster.
async fn create_team_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("team".to_string(), "payments".to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// Deletes a Namespace for good. A bare kube-apiserver has no namespace controller (that is
/// kube-controller-manager's), so the Namespace would stay `Terminating`; this does the
/// controller's last step — clear `spec.finalizers` through `/finalize` — and waits until it is
/// gone.
async fn delete_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete namespace {name}: {e}"));
    let mut ns = namespaces
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get namespace {name}: {e}"));
    if let Some(spec) = ns.spec.as_mut() {
        spec.finalizers = Some(vec![]);
    }
    namespaces
        .replace_subresource("finalize", name, &PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("finalize namespace {name}: {e}"));
    let gone = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let namespaces = namespaces.clone();
        async move { matches!(namespaces.get_opt(name).await, Ok(None)) }
    })
    .await;
    assert!(
        gone.is_some(),
        "namespace {name} still exists after finalize"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_running_daemon_follows_a_resource_classifier_on_the_classify_timer() {
    let fleet = ControlPlanes::builder().names(&["teams", "other"]).start();
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("teams", "env: prod"), ("other", "env: prod")]),
    )
    .write("classifiers/teams.yaml", CLASSIFIER);
    labelled_profile(&repo, "team-tools", "has-teams", "true");
    let commit = repo.commit("classify by namespaces");

    // The poll interval is far longer than the waits below: only the classify timer can
    // explain a pass in between.
    let daemon = Daemon::on(
        &repo,
        &fleet,
        &["--interval", "60s", "--classify-interval", "2s"],
    );
    let first = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            repo.note("refs/notes/flotilla", &commit).is_some()
                && repo.note("refs/notes/flotilla-state", &commit).is_some()
        },
    )
    .await;
    assert!(first.is_some(), "no notes; daemon log:\n{}", daemon.log());
    let state = repo.state(&commit);
    assert!(
        state["clusters"]["teams"]["labels"]
            .get("has-teams")
            .is_none(),
        "{state:#}"
    );

    let teams = fleet.client("teams").await;
    let other = fleet.client("other").await;
    let present = |client: &kube::Client| {
        let client = client.clone();
        async move { configmap(&client, "default", "team-tools").await.is_some() }
    };
    assert!(!present(&teams).await && !present(&other).await);

    // Idle: for three classify intervals nothing changes. The timer asks (`/version`), but
    // writes nothing to any cluster and leaves the notes refs alone.
    let notes_ref = |r: &str| support::fleet::git(&repo.bare(), &["rev-parse", r]);
    let refs_before = (
        notes_ref("refs/notes/flotilla"),
        notes_ref("refs/notes/flotilla-state"),
    );
    let versions = |name: &str| {
        fleet
            .requests(name)
            .iter()
            .filter(|e| e.uri.starts_with("/version"))
            .count()
    };
    let before: Vec<(usize, usize)> = ["teams", "other"]
        .iter()
        .map(|n| (versions(n), fleet.write_requests(n).len()))
        .collect();
    let cpu_before = cpu_seconds(daemon.pid());
    let window = Duration::from_secs(7);
    tokio::time::sleep(window).await;
    let cpu = cpu_seconds(daemon.pid()) - cpu_before;
    for (name, (versions_before, writes_before)) in ["teams", "other"].iter().zip(&before) {
        let asked = versions(name) - versions_before;
        assert!(
            asked >= 2,
            "{name}: the classify timer asked /version {asked} times in {window:?}\n{}",
            daemon.log()
        );
        assert_eq!(
            fleet.write_requests(name).len(),
            *writes_before,
            "{name}: an idle classify tick wrote\n{}",
            daemon.log()
        );
    }
    assert_eq!(
        (
            notes_ref("refs/notes/flotilla"),
            notes_ref("refs/notes/flotilla-state")
        ),
        refs_before,
        "an idle classify tick rewrote a note"
    );
    eprintln!(
        "idle: daemon used {cpu:.2}s CPU in {window:?} (classify interval 2s, 2 clusters, 1 classifier)"
    );

    // A labelled Namespace appears: within one classify interval (+ the pass) the label is
    // earned and the profile deployed.
    let started = Instant::now();
    create_team_namespace(&teams, "payments").await;
    let deployed = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        present(&teams)
    })
    .await;
    let Some(_) = deployed else {
        panic!(
            "profile not deployed after the Namespace appeared; daemon log:\n{}",
            daemon.log()
        );
    };
    let deploy_latency = started.elapsed();
    eprintln!(
        "classify latency: Namespace created -> profile deployed in {deploy_latency:?} (classify interval 2s, poll interval 60s)"
    );
    assert!(
        !present(&other).await,
        "the other cluster has no team Namespace"
    );
    let labelled = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            repo.note("refs/notes/flotilla-state", &commit)
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|s| {
                    s["clusters"]["teams"]["labels"]["has-teams"] == "true"
                        && s["clusters"]["teams"]["labelSources"]["has-teams"]
                            == "classifier:team-namespaces"
                        && s["clusters"]["other"]["labels"].get("has-teams").is_none()
                })
        },
    )
    .await;
    assert!(
        labelled.is_some(),
        "state note:\n{:#}\ndaemon log:\n{}",
        repo.state(&commit),
        daemon.log()
    );

    // The Namespace goes: the label goes, and the profile is withdrawn.
    let started = Instant::now();
    delete_namespace(&teams, "payments").await;
    let withdrawn = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { !present(&teams).await },
    )
    .await;
    let Some(_) = withdrawn else {
        panic!(
            "profile not withdrawn after the Namespace went; daemon log:\n{}",
            daemon.log()
        );
    };
    let withdraw_latency = started.elapsed();
    eprintln!(
        "classify latency: Namespace deleted -> profile withdrawn in {withdraw_latency:?} (classify interval 2s, poll interval 60s)"
    );
    let log = daemon.log();
    assert!(
        log.matches("classifier labels changed: passing now")
            .count()
            >= 2,
        "both changes were found by the classify timer:\n{log}"
    );
    let unlabelled = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            repo.note("refs/notes/flotilla-state", &commit)
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|s| {
                    s["clusters"]["teams"]["labels"].get("has-teams").is_none()
                        && s["clusters"]["teams"]["profiles"]["team-tools"]["status"] == "withdrawn"
                })
        },
    )
    .await;
    assert!(
        unlabelled.is_some(),
        "state note:\n{:#}\ndaemon log:\n{}",
        repo.state(&commit),
        daemon.log()
    );
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may contain spaces) close with `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf");
    let per_second: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0);
    ticks as f64 / per_second
}

/// The lines of the section of `cluster` in a human note (`## one` or `## one, two`).
fn section<'a>(note: &'a str, cluster: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in note.lines() {
        if let Some(names) = line.strip_prefix("## ") {
            inside = names.split(", ").any(|n| n == cluster);
            continue;
        }
        if inside {
            out.push(line);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn label_ownership_inventory_first_then_first_classifier_by_name() {
    let fleet = ControlPlanes::builder().names(&["one", "two"]).start();
    let repo = ConfigRepo::new();
    let any = "[{version: 1.0.0, comparison: GreaterThanOrEqualTo}]";
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("one", "env: prod"), ("two", "tier: x")]),
    )
    // Listed out of name order on purpose: ownership goes by name, not by file order.
    .write(
        "classifiers/labels.yaml",
        &[
            version_classifier("c-env", "env", "dev", any),
            version_classifier("b-gpu", "gpu", "h100", any),
            version_classifier("a-gpu", "gpu", "a100", any),
        ]
        .concat(),
    );
    labelled_profile(&repo, "gpu-tools", "gpu", "a100");
    let commit = repo.commit("competing classifiers");

    let gpu_line = "label conflict: classifier b-gpu wants gpu=h100, but classifier a-gpu owns gpu";
    let env_line = "label conflict: classifier c-env wants env=dev, but the inventory sets it";
    let status_cache = tempfile::tempdir().expect("tempdir");
    let mut runs = Vec::new();
    for attempt in 0..2 {
        let run = sync_once(&repo, &fleet, &[]);
        assert_eq!(
            run.code, 0,
            "label conflicts do not fail a sync\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        for cluster in ["one", "two"] {
            assert!(
                configmap(&fleet.client(cluster).await, "default", "gpu-tools")
                    .await
                    .is_some(),
                "{cluster}: selected by gpu=a100\n{}",
                run.stdout
            );
        }

        let state = repo.state(&commit);
        let one = &state["clusters"]["one"];
        let two = &state["clusters"]["two"];
        assert_eq!(
            one["labels"],
            serde_json::json!({"env": "prod", "gpu": "a100"}),
            "{state:#}"
        );
        assert_eq!(
            two["labels"],
            serde_json::json!({"env": "dev", "gpu": "a100", "tier": "x"}),
            "{state:#}"
        );
        assert_eq!(
            one["labelSources"],
            serde_json::json!({"env": "inventory", "gpu": "classifier:a-gpu"}),
            "{state:#}"
        );
        assert_eq!(
            two["labelSources"],
            serde_json::json!({"env": "classifier:c-env", "gpu": "classifier:a-gpu", "tier": "inventory"}),
            "{state:#}"
        );
        let gpu = serde_json::json!({"classifier": "b-gpu", "key": "gpu", "value": "h100", "owner": "classifier:a-gpu"});
        let env = serde_json::json!({"classifier": "c-env", "key": "env", "value": "dev", "owner": "inventory"});
        assert_eq!(
            one["labelConflicts"],
            serde_json::json!([gpu, env]),
            "{state:#}"
        );
        assert_eq!(two["labelConflicts"], serde_json::json!([gpu]), "{state:#}");

        let note = repo
            .note("refs/notes/flotilla", &commit)
            .expect("human note");
        assert!(note.contains("3 label conflicts"), "{note}");
        let one_section = section(&note, "one");
        let two_section = section(&note, "two");
        assert!(
            one_section.contains(&"labels from classifiers: gpu=a100 (a-gpu)"),
            "{note}"
        );
        assert!(
            one_section.contains(&gpu_line) && one_section.contains(&env_line),
            "{note}"
        );
        assert!(
            two_section.contains(&"labels from classifiers: env=dev (c-env), gpu=a100 (a-gpu)"),
            "{note}"
        );
        assert!(
            two_section.contains(&gpu_line) && !two_section.contains(&env_line),
            "{note}"
        );
        assert!(
            !note.contains("## one, two") && !note.contains("## two, one"),
            "different conflicts, different sections:\n{note}"
        );

        // `flotilla status`, from the bare repository and from the work tree's remote.
        for source in [repo.bare().display().to_string(), repo.url()] {
            let out = std::process::Command::new(support::fleet::flotilla_bin())
                .args(["status", "--repo", &source, "--cache-dir"])
                .arg(status_cache.path())
                .output()
                .expect("run status");
            let table = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{table}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rows: Vec<(&str, &str)> = table
                .lines()
                .filter(|l| l.split_whitespace().nth(2) == Some("label-conflict"))
                .map(|l| {
                    let cluster = l.split_whitespace().next().unwrap_or_default();
                    let detail = l.find("classifier ").map_or("", |i| &l[i..]);
                    (cluster, detail)
                })
                .collect();
            let want: Vec<(&str, &str)> = vec![
                ("one", &gpu_line["label conflict: ".len()..]),
                ("one", &env_line["label conflict: ".len()..]),
                ("two", &gpu_line["label conflict: ".len()..]),
            ];
            assert_eq!(rows, want, "{source}:\n{table}");
        }
        eprintln!("run {attempt}: ownership and conflicts as expected");
        runs.push((
            one["labelSources"].clone(),
            one["labelConflicts"].clone(),
            two["labelSources"].clone(),
            two["labelConflicts"].clone(),
        ));
    }
    assert_eq!(runs[0], runs[1], "the same outcome on every pass");

    // The running daemon passes every second; the label conflicts stay the same, so after its
    // first note on the commit (a commit new to it is always written) it rewrites nothing.
    let notes_ref = |r: &str| support::fleet::git(&repo.bare(), &["rev-parse", r]);
    let refs = || {
        (
            notes_ref("refs/notes/flotilla"),
            notes_ref("refs/notes/flotilla-state"),
        )
    };
    let synced = refs();
    let daemon = Daemon::on(
        &repo,
        &fleet,
        &["--interval", "1s", "--classify-interval", "1s"],
    );
    let written = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let now = refs();
            now.0 != synced.0 && now.1 != synced.1
        },
    )
    .await;
    assert!(written.is_some(), "daemon log:\n{}", daemon.log());
    let first = refs();
    let requests_before = fleet.requests("one").len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        fleet.requests("one").len() > requests_before,
        "the daemon kept passing"
    );
    assert_eq!(
        refs(),
        first,
        "an unchanged state rewrote the notes\ndaemon log:\n{}",
        daemon.log()
    );
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["labelConflicts"], runs[0].1,
        "{state:#}"
    );
}
