//! Classifiers over live facts of a cluster → its effective labels. Pure: the facts are read by
//! the `cluster` adapter and passed in, so every rule here is a table-driven unit test.
//!
//! Label ownership (DESIGN §2): inventory labels are never overridden; of two classifiers
//! setting one key, the first by name owns it and the other reports a conflict.

use std::collections::BTreeMap;

use crate::config::{
    Classifier, Cluster, Comparison, LabelFilter, LabelOperation, ResourceSelector,
};

/// What is known about a cluster's live state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// `/version`, when the cluster was reached.
    pub version: Option<VersionInfo>,
    /// For each resource query that was answered, the labels of every object it found. A query
    /// missing here could not be asked; an unknown kind is answered with no objects.
    pub resources: BTreeMap<ResourceQuery, Vec<BTreeMap<String, String>>>,
}

/// One list request a `resourceSelector` needs: the objects of a kind, optionally only in one
/// namespace (else all) and only by one name. Label filters are applied to the answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceQuery {
    /// API group (`""` for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Only in this namespace.
    pub namespace: Option<String>,
    /// Only this name.
    pub name: Option<String>,
}

impl ResourceQuery {
    /// The query a selector needs.
    pub fn of(selector: &ResourceSelector) -> Self {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        ResourceQuery {
            group: selector.group.clone(),
            version: selector.version.clone(),
            kind: selector.kind.clone(),
            namespace: nonempty(&selector.namespace),
            name: nonempty(&selector.name),
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every distinct query these classifiers' `deployedResourceConstraint`s need, sorted.
pub fn resource_queries<'a>(
    classifiers: impl IntoIterator<Item = &'a Classifier>,
) -> Vec<ResourceQuery> {
    let mut out: Vec<ResourceQuery> = classifiers
        .into_iter()
        .filter_map(|c| c.spec.deployed_resource_constraint.as_ref())
        .flat_map(|drc| drc.resource_selectors.iter())
        .map(|s| ResourceQuery::of(&s.value))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether an object's labels pass one filter, as Sveltos reads them (a Kubernetes label
/// selector): Equal = present with the value; Different = absent or another value (`key!=value`);
/// Has = present; DoesNotHave = absent.
fn passes(filter: &LabelFilter, labels: &BTreeMap<String, String>) -> bool {
    let actual = labels.get(&filter.key);
    let wanted = filter.value.as_deref().unwrap_or_default();
    match filter.operation {
        LabelOperation::Equal => actual.is_some_and(|v| v == wanted),
        LabelOperation::Different => actual.is_none_or(|v| v != wanted),
        LabelOperation::Has => actual.is_some(),
        LabelOperation::DoesNotHave => actual.is_none(),
    }
}

/// Whether a selector finds at least one object in these facts; a query that was not answered
/// finds nothing.
fn finds(selector: &ResourceSelector, facts: &ClusterFacts) -> bool {
    facts
        .resources
        .get(&ResourceQuery::of(selector))
        .is_some_and(|objects| {
            objects
                .iter()
                .any(|labels| selector.label_filters.iter().all(|f| passes(f, labels)))
        })
}

/// The parts of `/version` that templates and classifiers use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// e.g. `v1.34.2-eks-1a2b`.
    pub git_version: String,
    /// e.g. `1`.
    pub major: String,
    /// e.g. `34` (some providers append `+`).
    pub minor: String,
}

impl VersionInfo {
    /// The version's numbers, ignoring a `v` prefix and any suffix (`v1.34.2-eks-1a2b` → 1.34.2),
    /// which is how providers' versions must compare.
    pub fn numbers(&self) -> Option<semver::Version> {
        version_numbers(&self.git_version)
    }
}

/// Parses the leading `major.minor.patch` numbers of a Kubernetes version string.
pub fn version_numbers(text: &str) -> Option<semver::Version> {
    let text = text.trim().trim_start_matches('v');
    let mut numbers = text.splitn(3, '.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok()
    });
    let major = numbers.next()??;
    let minor = numbers.next()??;
    let patch = numbers.next().flatten().unwrap_or(0);
    Some(semver::Version::new(major, minor, patch))
}

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// A label source read back from a state note is not one we write.
    #[error("label source {0:?} is neither \"inventory\" nor \"classifier:<name>\"")]
    UnknownLabelSource(String),
}

/// Who set an effective label. Written in notes as the string `inventory` or
/// `classifier:<name>`, so a state note reads `"labelSources": {"env": "inventory"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum LabelOwner {
    /// The Cluster document.
    Inventory,
    /// A classifier, by name.
    Classifier(String),
}

impl std::fmt::Display for LabelOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelOwner::Inventory => f.write_str("inventory"),
            LabelOwner::Classifier(name) => write!(f, "classifier:{name}"),
        }
    }
}

impl From<LabelOwner> for String {
    fn from(owner: LabelOwner) -> String {
        owner.to_string()
    }
}

impl TryFrom<String> for LabelOwner {
    type Error = ClassifyError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text == "inventory" {
            return Ok(LabelOwner::Inventory);
        }
        match text.strip_prefix("classifier:") {
            Some(name) if !name.is_empty() => Ok(LabelOwner::Classifier(name.to_string())),
            _ => Err(ClassifyError::UnknownLabelSource(text)),
        }
    }
}

/// A classifier label that lost to an owner of the same key: the classifier matched, but this
/// label of it was not applied. Reported in both notes so the operator can fix the rules.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelConflict {
    /// The classifier whose label was not applied.
    pub classifier: String,
    /// The key.
    pub key: String,
    /// The value the classifier wanted to set.
    pub value: String,
    /// Who owns the key.
    pub owner: LabelOwner,
}

/// The sentence an operator reads: `classifier b-gpu wants gpu=a100, but classifier a-gpu owns
/// gpu` or `classifier c-env wants env=dev, but the inventory sets it`.
impl std::fmt::Display for LabelConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "classifier {} wants {}={}, but ",
            self.classifier, self.key, self.value
        )?;
        match &self.owner {
            LabelOwner::Inventory => f.write_str("the inventory sets it"),
            LabelOwner::Classifier(owner) => write!(f, "classifier {owner} owns {}", self.key),
        }
    }
}

/// The outcome for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classification {
    /// Inventory labels plus the labels of matching classifiers.
    pub labels: BTreeMap<String, String>,
    /// Who set each label.
    pub owners: BTreeMap<String, LabelOwner>,
    /// Classifier labels that were not applied.
    pub conflicts: Vec<LabelConflict>,
    /// Names of the classifiers that matched.
    pub matched: Vec<String>,
}

/// Whether a classifier's constraints hold for these facts. A constraint that needs a fact we do
/// not have (no version: the cluster was not reached) does not hold: a label is only earned on
/// evidence. Every `deployedResourceConstraint` selector must find at least one object whose
/// labels pass all its filters; an unanswered query finds nothing.
pub fn matches(classifier: &Classifier, facts: &ClusterFacts) -> bool {
    if let Some(drc) = &classifier.spec.deployed_resource_constraint
        && !drc
            .resource_selectors
            .iter()
            .all(|s| finds(&s.value, facts))
    {
        return false;
    }
    if classifier.version_constraints.is_empty() {
        return true;
    }
    let Some(version) = facts.version.as_ref().and_then(VersionInfo::numbers) else {
        return false;
    };
    classifier
        .version_constraints
        .iter()
        .all(|(comparison, wanted)| compare(&version, *comparison, wanted))
}

fn compare(actual: &semver::Version, comparison: Comparison, wanted: &semver::Version) -> bool {
    // Compare by numbers only: pre-release parts of either side do not order versions here.
    let key = |v: &semver::Version| (v.major, v.minor, v.patch);
    let (a, w) = (key(actual), key(wanted));
    match comparison {
        Comparison::Equal => a == w,
        Comparison::NotEqual => a != w,
        Comparison::GreaterThan => a > w,
        Comparison::LessThan => a < w,
        Comparison::GreaterThanOrEqualTo => a >= w,
        Comparison::LessThanOrEqualTo => a <= w,
    }
}

/// Effective labels of one cluster from its inventory labels and the classifiers it matches.
pub fn classify<'a>(
    cluster: &Cluster,
    classifiers: impl IntoIterator<Item = &'a Classifier>,
    facts: &ClusterFacts,
) -> Classification {
    let mut out = Classification {
        labels: cluster.labels.clone(),
        owners: cluster
            .labels
            .keys()
            .map(|k| (k.clone(), LabelOwner::Inventory))
            .collect(),
        ..Classification::default()
    };
    let mut ordered: Vec<&Classifier> = classifiers.into_iter().collect();
    ordered.sort_by(|a, b| a.name.cmp(&b.name));
    for classifier in ordered {
        if !matches(classifier, facts) {
            continue;
        }
        out.matched.push(classifier.name.clone());
        for label in &classifier.spec.classifier_labels {
            let key = &label.key.value;
            if let Some(owner) = out.owners.get(key) {
                out.conflicts.push(LabelConflict {
                    classifier: classifier.name.clone(),
                    key: key.clone(),
                    value: label.value.value.clone(),
                    owner: owner.clone(),
                });
                continue;
            }
            out.labels.insert(key.clone(), label.value.value.clone());
            out.owners
                .insert(key.clone(), LabelOwner::Classifier(classifier.name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::source::FileTree;

    fn repo(classifiers: &str) -> crate::config::ConfigRepo {
        let mut tree = FileTree::new();
        tree.insert_file(
            "clusters/c.yaml",
            b"apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels: {env: prod}\n".to_vec(),
        );
        tree.insert_file("classifiers/c.yaml", classifiers.as_bytes().to_vec());
        match load(tree) {
            Ok(repo) => repo,
            Err(e) => panic!("test repo invalid: {e}"),
        }
    }

    fn classifier(name: &str, key: &str, value: &str, constraints: &str) -> String {
        format!(
            "---\napiVersion: flotilla.dev/v1alpha1\nkind: Classifier\nmetadata: {{name: {name}}}\nspec:\n  classifierLabels: [{{key: {key}, value: {value}}}]\n  kubernetesVersionConstraints: {constraints}\n"
        )
    }

    fn facts(git_version: &str) -> ClusterFacts {
        ClusterFacts {
            version: Some(VersionInfo {
                git_version: git_version.into(),
                major: "1".into(),
                minor: "0".into(),
            }),
            resources: BTreeMap::new(),
        }
    }

    #[test]
    fn version_numbers_ignore_prefix_and_suffix() {
        let cases = [
            ("v1.34.2", Some((1, 34, 2))),
            ("v1.34.2-eks-1a2b", Some((1, 34, 2))),
            ("1.37.0+k3s1", Some((1, 37, 0))),
            ("v1.30", Some((1, 30, 0))),
            ("garbage", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = version_numbers(text).map(|v| (v.major, v.minor, v.patch));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn each_comparison() {
        let cases = [
            ("Equal", "1.34.2", "v1.34.2-eks-1a2b", true),
            ("Equal", "1.34.0", "v1.34.2", false),
            ("NotEqual", "1.34.0", "v1.34.2", true),
            ("GreaterThan", "1.34.0", "v1.34.2", true),
            ("GreaterThan", "1.34.2", "v1.34.2", false),
            ("LessThan", "1.35.0", "v1.34.9", true),
            ("LessThan", "1.34.0", "v1.34.0", false),
            ("GreaterThanOrEqualTo", "1.34.2", "v1.34.2", true),
            ("GreaterThanOrEqualTo", "1.37.0", "v1.34.2", false),
            ("LessThanOrEqualTo", "1.34.2", "v1.34.2", true),
            ("LessThanOrEqualTo", "1.34.1", "v1.34.2", false),
            // Both outcomes of every comparison against a provider's suffixed gitVersion, and
            // the exact boundary (equal numbers) of each.
            ("Equal", "1.34.3", "v1.34.2-eks-1a2b", false),
            ("NotEqual", "1.34.2", "v1.34.2-eks-1a2b", false),
            ("NotEqual", "1.34.3", "v1.34.2-eks-1a2b", true),
            ("GreaterThan", "1.34.1", "v1.34.2-eks-1a2b", true),
            ("GreaterThan", "1.34.2", "v1.34.2-eks-1a2b", false),
            ("LessThan", "1.34.3", "v1.34.2-eks-1a2b", true),
            ("LessThan", "1.34.2", "v1.34.2-eks-1a2b", false),
            ("GreaterThanOrEqualTo", "1.34.2", "v1.34.2-eks-1a2b", true),
            ("GreaterThanOrEqualTo", "1.34.3", "v1.34.2-eks-1a2b", false),
            ("LessThanOrEqualTo", "1.34.2", "v1.34.2-eks-1a2b", true),
            ("LessThanOrEqualTo", "1.34.1", "v1.34.2-eks-1a2b", false),
            // Minor versions compare as numbers, not text (1.100 > 1.37).
            ("GreaterThan", "1.37.0", "v1.100.0", true),
            ("LessThan", "1.9.0", "v1.37.0", false),
        ];
        for (comparison, version, live, want) in cases {
            let text = classifier(
                "k",
                "k8s",
                "x",
                &format!("[{{version: {version}, comparison: {comparison}}}]"),
            );
            let repo = repo(&text);
            let cluster = &repo.clusters["c1"];
            let out = classify(cluster, repo.classifiers.values(), &facts(live));
            assert_eq!(
                out.labels.contains_key("k8s"),
                want,
                "{comparison} {version} vs {live}"
            );
        }
    }

    #[test]
    fn every_version_constraint_must_hold() {
        let text = classifier(
            "range",
            "k8s",
            "v1-34",
            "[{version: 1.34.0, comparison: GreaterThanOrEqualTo}, {version: 1.35.0, comparison: LessThan}]",
        );
        let repo = repo(&text);
        for (live, want) in [
            ("v1.34.0", true),
            ("v1.34.9-gke.100", true),
            ("v1.35.0", false),
            ("v1.33.9", false),
            ("v1.37.1", false),
        ] {
            let out = classify(
                &repo.clusters["c1"],
                repo.classifiers.values(),
                &facts(live),
            );
            assert_eq!(out.labels.contains_key("k8s"), want, "{live}");
            assert_eq!(out.matched == ["range"], want, "{live}");
        }
    }

    #[test]
    fn label_owner_is_written_as_a_string() {
        let cases = [
            (LabelOwner::Inventory, "\"inventory\""),
            (
                LabelOwner::Classifier("gatekeeper-3-9".into()),
                "\"classifier:gatekeeper-3-9\"",
            ),
        ];
        for (owner, json) in cases {
            assert_eq!(serde_json::to_string(&owner).ok().as_deref(), Some(json));
            let back: Result<LabelOwner, _> = serde_json::from_str(json);
            assert_eq!(back.ok(), Some(owner));
        }
        for bad in ["\"\"", "\"classifier:\"", "\"Inventory\"", "\"operator\""] {
            assert!(serde_json::from_str::<LabelOwner>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unreachable_cluster_earns_no_version_label() {
        let repo = repo(&classifier(
            "k",
            "k8s",
            "x",
            "[{version: 1.0.0, comparison: GreaterThan}]",
        ));
        let out = classify(
            &repo.clusters["c1"],
            repo.classifiers.values(),
            &ClusterFacts::default(),
        );
        assert!(out.matched.is_empty());
        assert_eq!(out.labels.get("env").map(String::as_str), Some("prod"));
    }

    #[test]
    fn ownership_inventory_first_then_first_classifier_by_name() {
        let text = [
            classifier("b-second", "tier", "b", "[]"),
            classifier("a-first", "tier", "a", "[]"),
            classifier("c-env", "env", "dev", "[]"),
        ]
        .concat();
        let repo = repo(&text);
        let out = classify(
            &repo.clusters["c1"],
            repo.classifiers.values(),
            &facts("v1.34.0"),
        );
        assert_eq!(out.labels["tier"], "a");
        assert_eq!(out.labels["env"], "prod");
        assert_eq!(out.owners["tier"], LabelOwner::Classifier("a-first".into()));
        let conflicts: Vec<(&str, &str)> = out
            .conflicts
            .iter()
            .map(|c| (c.classifier.as_str(), c.key.as_str()))
            .collect();
        assert_eq!(conflicts, vec![("b-second", "tier"), ("c-env", "env")]);
        assert_eq!(out.conflicts[1].owner, LabelOwner::Inventory);
        assert_eq!(out.owners["env"], LabelOwner::Inventory);
        assert_eq!(out.matched, ["a-first", "b-second", "c-env"]);
        let lines: Vec<String> = out.conflicts.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "classifier b-second wants tier=b, but classifier a-first owns tier",
                "classifier c-env wants env=dev, but the inventory sets it",
            ]
        );
        // The same rules give the same outcome whatever order they are listed in.
        let reversed = [
            classifier("c-env", "env", "dev", "[]"),
            classifier("a-first", "tier", "a", "[]"),
            classifier("b-second", "tier", "b", "[]"),
        ]
        .concat();
        let repo = self::repo(&reversed);
        let again = classify(
            &repo.clusters["c1"],
            repo.classifiers.values(),
            &facts("v1.34.0"),
        );
        assert_eq!(again, out);
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn resource_classifier(selectors: &str) -> String {
        format!(
            "---\napiVersion: flotilla.dev/v1alpha1\nkind: Classifier\nmetadata: {{name: r}}\nspec:\n  classifierLabels: [{{key: found, value: \"yes\"}}]\n  deployedResourceConstraint:\n    resourceSelectors: {selectors}\n"
        )
    }

    fn namespaces() -> ResourceQuery {
        ResourceQuery {
            group: String::new(),
            version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: None,
        }
    }

    #[test]
    fn label_filters_on_found_objects() {
        let ns = "{version: v1, kind: Namespace";
        // (filters, labels of each object found, matches)
        type Case<'a> = (&'a str, &'a [&'a [(&'a str, &'a str)]], bool);
        let cases: &[Case] = &[
            (
                "labelFilters: [{key: team, operation: Has}]",
                &[&[("team", "a")]],
                true,
            ),
            (
                "labelFilters: [{key: team, operation: Has}]",
                &[&[("x", "a")]],
                false,
            ),
            ("labelFilters: [{key: team, operation: Has}]", &[], false),
            (
                "labelFilters: [{key: team, operation: DoesNotHave}]",
                &[&[("x", "a")]],
                true,
            ),
            (
                "labelFilters: [{key: team, operation: DoesNotHave}]",
                &[&[("team", "a")]],
                false,
            ),
            (
                "labelFilters: [{key: team, operation: Equal, value: a}]",
                &[&[("team", "a")]],
                true,
            ),
            (
                "labelFilters: [{key: team, operation: Equal, value: a}]",
                &[&[("team", "b")]],
                false,
            ),
            (
                "labelFilters: [{key: team, operation: Equal, value: a}]",
                &[&[]],
                false,
            ),
            (
                "labelFilters: [{key: team, operation: Different, value: a}]",
                &[&[("team", "b")]],
                true,
            ),
            (
                "labelFilters: [{key: team, operation: Different, value: a}]",
                &[&[]],
                true,
            ),
            (
                "labelFilters: [{key: team, operation: Different, value: a}]",
                &[&[("team", "a")]],
                false,
            ),
            // All filters must hold on one object, not spread over several.
            (
                "labelFilters: [{key: team, operation: Has}, {key: env, operation: Equal, value: prod}]",
                &[&[("team", "a")], &[("env", "prod")]],
                false,
            ),
            (
                "labelFilters: [{key: team, operation: Has}, {key: env, operation: Equal, value: prod}]",
                &[&[("x", "y")], &[("team", "a"), ("env", "prod")]],
                true,
            ),
            ("labelFilters: []", &[&[]], true),
        ];
        for (filters, objects, want) in cases {
            let repo = repo(&resource_classifier(&format!("[{ns}, {filters}}}]")));
            let mut facts = facts("v1.34.0");
            facts
                .resources
                .insert(namespaces(), objects.iter().map(|o| labels(o)).collect());
            let out = classify(&repo.clusters["c1"], repo.classifiers.values(), &facts);
            assert_eq!(
                out.labels.contains_key("found"),
                *want,
                "{filters} on {objects:?}"
            );
        }
    }

    #[test]
    fn every_selector_must_find_an_object_and_unanswered_queries_find_nothing() {
        let text = resource_classifier(
            "[{version: v1, kind: Namespace}, {group: apps, version: v1, kind: Deployment, namespace: kube-system, name: coredns}]",
        );
        let repo = repo(&text);
        let queries = resource_queries(repo.classifiers.values());
        let deployment = ResourceQuery {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some("kube-system".into()),
            name: Some("coredns".into()),
        };
        assert_eq!(queries, vec![namespaces(), deployment.clone()]);
        assert_eq!(deployment.api_version(), "apps/v1");
        assert_eq!(namespaces().api_version(), "v1");
        let run = |answers: &[(&ResourceQuery, usize)]| {
            let mut facts = facts("v1.34.0");
            for (query, found) in answers {
                facts
                    .resources
                    .insert((*query).clone(), vec![BTreeMap::new(); *found]);
            }
            classify(&repo.clusters["c1"], repo.classifiers.values(), &facts)
                .labels
                .contains_key("found")
        };
        assert!(run(&[(&namespaces(), 3), (&deployment, 1)]));
        assert!(!run(&[(&namespaces(), 3), (&deployment, 0)]));
        assert!(!run(&[(&namespaces(), 3)]));
        assert!(!run(&[]));
        let unreached = classify(
            &repo.clusters["c1"],
            repo.classifiers.values(),
            &ClusterFacts::default(),
        );
        assert!(unreached.matched.is_empty());
    }
}
