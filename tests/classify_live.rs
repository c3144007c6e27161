//! Classifiers over live facts, end to end: a `deployedResourceConstraint` labels only the
//! cluster where the selected objects exist, and a profile selected through that label lands
//! only there.

mod support;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use support::ControlPlanes;
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
