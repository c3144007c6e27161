//! `flotilla run --plan-refs 'refs/pull/*/head'`: the daemon writes the markdown plan of each new
//! pull-request head as a note under `refs/notes/flotilla-plan` and pushes it; a head already
//! planned is not planned again; a new push to the pull request gets its own plan. Real git
//! repositories (a bare remote over file://) and a real control plane for the daemon's own pass.

mod support;

use std::time::Duration;

use support::ControlPlanes;
use support::daemon::{Daemon, wait_until};
use support::fleet::{ConfigRepo, clusters_yaml, configmap_yaml, git, profile_yaml};

/// Commits `content` at `path` on a branch `pr` in the work tree (from main), pushes it as
/// `refs/pull/1/head`, and goes back to main; the head commit.
fn push_pull_request(repo: &ConfigRepo, path: &str, content: &str, message: &str) -> String {
    let work = repo.work();
    git(&work, &["checkout", "-q", "-B", "pr"]);
    std::fs::write(work.join(path), content).expect("write the change");
    git(&work, &["commit", "-q", "-a", "-m", message]);
    let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    git(
        &work,
        &["push", "-q", "-f", "origin", "pr:refs/pull/1/head"],
    );
    git(&work, &["checkout", "-q", "main"]);
    head
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_writes_a_plan_note_on_each_new_pull_request_head() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("one", "env: prod")]),
    )
    .write(
        "manifests/app/settings.yaml",
        &configmap_yaml("default", "settings", &[("k", "v1")]),
    )
    .write(
        "profiles/app.yaml",
        &profile_yaml(
            "app",
            "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/app}\n",
        ),
    );
    let main = repo.commit("app");
    let first = push_pull_request(
        &repo,
        "manifests/app/settings.yaml",
        &configmap_yaml("default", "settings", &[("k", "v2")]),
        "settings: v2",
    );

    let daemon = Daemon::on(
        &repo,
        &fleet,
        &["--interval", "1s", "--plan-refs", "refs/pull/*/head"],
    );
    let plan_note = |commit: &str| repo.note("refs/notes/flotilla-plan", commit);
    let noted = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { plan_note(&first).is_some() },
    )
    .await;
    assert!(noted.is_some(), "no plan note:\n{}", daemon.log());
    let plan = plan_note(&first).unwrap_or_default();
    assert!(plan.contains("### flotilla plan"), "{plan}");
    assert!(
        plan.contains("- changed `ConfigMap/default/settings`"),
        "{plan}"
    );
    assert!(plan.contains("-  k: v1\n+  k: v2\n"), "{plan}");
    // The followed branch's commit gets no plan, and the pull request is not applied.
    assert!(plan_note(&main).is_none());

    // Several polls later the same head is not planned again.
    let plan_commits = || {
        git(
            &repo.bare(),
            &["rev-list", "--count", "refs/notes/flotilla-plan"],
        )
        .trim()
        .parse::<usize>()
        .unwrap_or(0)
    };
    let before = plan_commits();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(plan_commits(), before, "replanned:\n{}", daemon.log());

    // A new push to the pull request: its head gets its own plan, against the same base.
    let second = push_pull_request(
        &repo,
        "manifests/app/settings.yaml",
        &configmap_yaml("default", "settings", &[("k", "v3")]),
        "settings: v3",
    );
    let noted = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { plan_note(&second).is_some() },
    )
    .await;
    assert!(
        noted.is_some(),
        "no plan for the new head:\n{}",
        daemon.log()
    );
    let plan = plan_note(&second).unwrap_or_default();
    assert!(plan.contains("-  k: v1\n+  k: v3\n"), "{plan}");
    assert!(plan_note(&first).is_some(), "the first plan was lost");
}
