//! Adapter: the review of two commits of a repository in render mode (no cluster access). Reads
//! both trees and the newest state note reachable from base through git, builds
//! kustomizationRefs with the kustomize binary, renders every cluster on both sides (in parallel
//! over clusters, one render of each side at a time per cluster so memory stays flat) and hands
//! the pairs to the pure [`compare_cluster`](super::compare_cluster).
//!
//! `flotilla plan` and, later, the daemon's plan of pull-request refs call [`review_commits`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::{
    ClusterInput, CommitInfo, LabelSource, ProfileSide, Review, ReviewError, Side, SideError,
    compare_cluster, review,
};
use crate::classify::LabelOwner;
use crate::config::{self, Cluster, ConfigRepo, StopMatchingBehavior};
use crate::git::GitSource;
use crate::render::kustomize::{Kustomize, Workspace};
use crate::render::sandbox::Sandbox;
use crate::render::{self, RenderError, RenderedProfile};
use crate::report::StateNote;
use crate::source::{Entry, FileTree};

/// How far back from base a state note is looked for (first parents).
pub const NOTE_SEARCH_DEPTH: usize = 1000;

/// What [`review_commits`] needs besides the two revisions.
#[derive(Debug, Clone)]
pub struct Options {
    /// Config root inside the repository.
    pub subdir: Option<String>,
    /// Notes ref of the human note; state notes are read from `<notes_ref>-state`.
    pub notes_ref: String,
    /// The kustomize binary; `None`: kustomizationRefs are reported as not expanded.
    pub kustomize: Option<Kustomize>,
    /// Threads rendering clusters (at least 1).
    pub threads: usize,
}

/// kustomize outputs of one side by (path, targetNamespace): the same for every cluster.
pub(super) type Built = BTreeMap<(String, Option<String>), Result<Arc<Vec<Value>>, String>>;

/// One loaded side.
pub(super) struct Loaded {
    pub(super) repo: Result<ConfigRepo, config::Diagnostics>,
    pub(super) info: CommitInfo,
}

/// The review of `base..head`. Blocking (git, kustomize subprocesses, rendering): call it from a
/// plain thread or `spawn_blocking`, not from inside an async task.
pub fn review_commits(
    source: &GitSource,
    base_rev: &str,
    head_rev: &str,
    options: &Options,
) -> Result<Review, ReviewError> {
    let base = load(source, base_rev, options)?;
    let head = load(source, head_rev, options)?;
    let mut errors = Vec::new();
    for (side, loaded) in [(Side::Base, &base), (Side::Head, &head)] {
        if let Err(diags) = &loaded.repo {
            errors.extend(diags.0.iter().map(|d| SideError {
                side,
                message: format!("{}:{}: {}", shown(options, &d.file), d.line, d.message),
            }));
        }
    }
    let (Ok(base_repo), Ok(head_repo)) = (&base.repo, &head.repo) else {
        return Ok(review(base.info, head.info, errors, Vec::new()));
    };
    let note = latest_state_note(source, &base.info.commit, &options.notes_ref)?;
    let built = match &options.kustomize {
        Some(tool) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ReviewError::Runtime)?;
            let b = runtime.block_on(build_all(base_repo, tool.clone()));
            let h = runtime.block_on(build_all(head_repo, tool.clone()));
            Some((b, h))
        }
        None => None,
    };
    let names: Vec<&String> = base_repo
        .clusters
        .keys()
        .chain(head_repo.clusters.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let threads = options.threads.max(1).min(names.len().max(1));
    // Each worker takes the next cluster when it is done with one, so none idles at the end
    // while another still has half a chunk to go.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let context = Context {
        unchanged: unchanged_profiles(base_repo, head_repo),
        base: base_repo,
        head: head_repo,
        built: built.as_ref(),
        note: note.as_ref(),
        options,
    };
    let clusters = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (context, names, next) = (&context, &names, &next);
                scope.spawn(move || {
                    let sandbox = Sandbox::new();
                    let mut out = Vec::new();
                    while let Some(name) =
                        names.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        out.push(compare_cluster(context.input(name, &sandbox)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker's panic is a bug: re-raise it rather than drop its clusters.
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Vec<_>>()
    });
    Ok(review(base.info, head.info, errors, clusters))
}

/// Resolves and loads one side.
pub(super) fn load(
    source: &GitSource,
    rev: &str,
    options: &Options,
) -> Result<Loaded, ReviewError> {
    let commit = source.resolve(rev)?;
    let subject = source.commit_summary(&commit)?;
    let tree = source.snapshot(&commit, options.subdir.as_deref())?;
    Ok(Loaded {
        repo: config::load(tree),
        info: CommitInfo { commit, subject },
    })
}

/// A config-root path as a repository path.
pub(super) fn shown(options: &Options, file: &str) -> String {
    match options.subdir.as_deref().map(|s| s.trim_matches('/')) {
        Some(s) if !s.is_empty() => format!("{s}/{file}"),
        _ => file.to_string(),
    }
}

/// The newest parsable state note on base or its first-parent ancestors.
fn latest_state_note(
    source: &GitSource,
    base: &str,
    notes_ref: &str,
) -> Result<Option<(String, StateNote)>, ReviewError> {
    for commit in source.first_parents(base, NOTE_SEARCH_DEPTH)? {
        // The unsharded note and every shard's, merged: labels of all clusters.
        let mut notes = Vec::new();
        for (state_ref, text) in source.state_notes(notes_ref, &commit)? {
            match StateNote::parse(&text) {
                Ok(note) => notes.push(note),
                Err(e) => {
                    tracing::warn!(%commit, %state_ref, error = %e, "state note is not flotilla's JSON; looking further back");
                }
            }
        }
        if let Some(note) = StateNote::merge(notes) {
            return Ok(Some((commit, note)));
        }
    }
    Ok(None)
}

/// Builds every kustomizationRef of a side once.
pub(super) async fn build_all(repo: &ConfigRepo, tool: Kustomize) -> Built {
    let workspace = Workspace::new(Ok(tool));
    let mut out = Built::new();
    for profile in repo.profiles.values() {
        for k in &profile.spec.kustomization_refs {
            let key = (k.value.path.clone(), k.value.target_namespace.clone());
            if out.contains_key(&key) {
                continue;
            }
            let result = workspace
                .build(&repo.tree, &key.0, key.1.as_deref())
                .await
                .map_err(|e| e.to_string());
            out.insert(key, result);
        }
    }
    out
}

/// Paths whose entries differ between two trees (added, removed or changed).
fn changed_paths(base: &FileTree, head: &FileTree) -> BTreeSet<String> {
    let old: BTreeMap<&str, &Entry> = base.entries_under("").collect();
    let new: BTreeMap<&str, &Entry> = head.entries_under("").collect();
    let mut out = BTreeSet::new();
    for (path, entry) in &old {
        if new.get(path) != Some(entry) {
            out.insert((*path).to_string());
        }
    }
    for path in new.keys() {
        if !old.contains_key(path) {
            out.insert((*path).to_string());
        }
    }
    out
}

/// Profiles whose render cannot differ between the sides for a cluster with the same template
/// context: the file they are written in is byte-identical, and nothing they can read changed
/// (conservatively: with any change outside clusters/, profiles/ and classifiers/, a profile
/// with kustomizationRefs or helmCharts, or in a tree with symlinks, counts as changed). These
/// are not rendered at all: a plan of a one-profile change renders one profile per cluster.
fn unchanged_profiles(base: &ConfigRepo, head: &ConfigRepo) -> BTreeSet<String> {
    let changed = changed_paths(&base.tree, &head.tree);
    let content: Vec<&String> = changed
        .iter()
        .filter(|p| {
            ![
                config::CLUSTERS_DIR,
                config::PROFILES_DIR,
                config::CLASSIFIERS_DIR,
            ]
            .iter()
            .any(|dir| p.starts_with(&format!("{dir}/")))
        })
        .collect();
    let symlinks = [&base.tree, &head.tree].iter().any(|t| {
        t.entries_under("")
            .any(|(_, e)| matches!(e, Entry::Symlink(_)))
    });
    let reads_changed = |profile: &config::Profile| {
        if content.is_empty() {
            return false;
        }
        if symlinks
            || !profile.spec.kustomization_refs.is_empty()
            || !profile.spec.helm_charts.is_empty()
        {
            return true;
        }
        profile
            .spec
            .policy_refs
            .iter()
            .any(|r| match &r.value.path {
                Some(path) => match head.tree.resolve(path) {
                    Ok(path) => content.iter().any(|c| {
                        **c == path || path.is_empty() || c.starts_with(&format!("{path}/"))
                    }),
                    Err(_) => true,
                },
                None => content
                    .iter()
                    .any(|c| c.starts_with(&format!("{}/", config::SOURCES_DIR))),
            })
    };
    head.profiles
        .values()
        .filter(|p| {
            base.profiles.get(&p.name).is_some_and(|b| {
                !changed.contains(&b.origin.file)
                    && !changed.contains(&p.origin.file)
                    && !reads_changed(p)
            })
        })
        .map(|p| p.name.clone())
        .collect()
}

/// What every cluster's render shares.
struct Context<'a> {
    /// Profiles that render the same on both sides for an unchanged cluster context.
    unchanged: BTreeSet<String>,
    base: &'a ConfigRepo,
    head: &'a ConfigRepo,
    built: Option<&'a (Built, Built)>,
    note: Option<&'a (String, StateNote)>,
    options: &'a Options,
}

impl Context<'_> {
    /// Both sides of one cluster, rendered.
    fn input(&self, name: &str, sandbox: &Sandbox) -> ClusterInput {
        let base_cluster = self.base.clusters.get(name);
        let head_cluster = self.head.clusters.get(name);
        let from_note = self
            .note
            .and_then(|(commit, note)| Some((commit, note.clusters.get(name)?)));
        let classifier_labels: BTreeMap<String, String> = match from_note {
            Some((_, state)) => state
                .labels
                .iter()
                .filter(|(k, _)| match state.label_sources.get(*k) {
                    Some(owner) => *owner != LabelOwner::Inventory,
                    // Notes without label sources: what the base inventory does not set.
                    None => {
                        state.label_sources.is_empty()
                            && base_cluster.is_none_or(|c| !c.labels.contains_key(*k))
                    }
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => BTreeMap::new(),
        };
        let labels = match from_note {
            Some((commit, _)) => LabelSource::StateNote {
                commit: commit.clone(),
                classifier_labels: classifier_labels.clone(),
            },
            None => LabelSource::Inventory,
        };
        let effective = |cluster: &Cluster| {
            let mut labels = cluster.labels.clone();
            for (k, v) in &classifier_labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            labels
        };
        let (base, head) = match (base_cluster, head_cluster) {
            // Leaving the fleet: nothing is deleted there, so base need not be rendered.
            (Some(_), None) => (Some(BTreeMap::new()), None),
            (None, Some(h)) => {
                let labels = effective(h);
                (
                    None,
                    Some(self.render_cluster(
                        self.head,
                        h,
                        &labels,
                        Side::Head,
                        &|_| false,
                        sandbox,
                    )),
                )
            }
            (Some(b), Some(h)) => {
                let (base_labels, head_labels) = (effective(b), effective(h));
                let same_context = b.document == h.document && base_labels == head_labels;
                let targets = |repo: &ConfigRepo, labels| -> BTreeSet<String> {
                    crate::plan::profiles_for_cluster(repo, name, labels)
                        .into_iter()
                        .map(|p| p.name.clone())
                        .collect()
                };
                let both: BTreeSet<String> = targets(self.base, &base_labels)
                    .intersection(&targets(self.head, &head_labels))
                    .cloned()
                    .collect();
                // Same inputs, same context: the same render, so neither side is rendered.
                let skip = |profile: &str| {
                    same_context && both.contains(profile) && self.unchanged.contains(profile)
                };
                (
                    Some(self.render_cluster(
                        self.base,
                        b,
                        &base_labels,
                        Side::Base,
                        &skip,
                        sandbox,
                    )),
                    Some(self.render_cluster(
                        self.head,
                        h,
                        &head_labels,
                        Side::Head,
                        &skip,
                        sandbox,
                    )),
                )
            }
            (None, None) => (None, None),
        };
        ClusterInput {
            name: name.to_string(),
            labels,
            paused: head_cluster.is_some_and(|c| c.paused),
            base,
            head,
        }
    }

    /// Every profile targeting the cluster on one side, rendered offline.
    fn render_cluster(
        &self,
        repo: &ConfigRepo,
        cluster: &Cluster,
        labels: &BTreeMap<String, String>,
        side: Side,
        skip: &dyn Fn(&str) -> bool,
        sandbox: &Sandbox,
    ) -> BTreeMap<String, ProfileSide> {
        let built = self.built.map(|(b, h)| match side {
            Side::Base => b,
            Side::Head => h,
        });
        let mut variables = serde_json::Map::new();
        variables.insert(
            "cluster".into(),
            render::cluster_context(cluster, labels, None),
        );
        let mut out = BTreeMap::new();
        for profile in crate::plan::profiles_for_cluster(repo, &cluster.name, labels) {
            if skip(&profile.name) {
                continue;
            }
            let mut result = render::render_profile(repo, profile, &variables, sandbox);
            if let (Ok(r), Some(built)) = (&mut result, built)
                && r.pending.is_empty()
                && let Err(e) = expand(built, r)
            {
                result = Err(e);
            }
            let result = result.map_err(|e| {
                format!(
                    "{}:{}: {}",
                    shown(self.options, &e.origin.file),
                    e.origin.line,
                    e.message
                )
            });
            let leave = profile.spec.stop_matching_behavior == StopMatchingBehavior::LeavePolicies;
            out.insert(
                profile.name.clone(),
                ProfileSide::from_render(result, leave),
            );
        }
        out
    }
}

/// [`render::kustomize::expand`] from outputs built beforehand (synchronous, so clusters render
/// on plain threads).
pub(super) fn expand(built: &Built, rendered: &mut RenderedProfile) -> Result<(), RenderError> {
    for k in std::mem::take(&mut rendered.kustomizations) {
        let key = (k.path.clone(), k.target_namespace.clone());
        let objects = match built.get(&key) {
            Some(Ok(objects)) => objects,
            Some(Err(e)) => {
                return Err(RenderError {
                    origin: k.origin.clone(),
                    message: format!("kustomizationRef {}: {e}", k.path),
                });
            }
            None => {
                return Err(RenderError {
                    origin: k.origin.clone(),
                    message: format!("kustomizationRef {}: not built", k.path),
                });
            }
        };
        render::kustomize::add_built(rendered, &k, objects);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> ConfigRepo {
        let mut tree = FileTree::new();
        for (path, text) in files {
            tree.insert_file(*path, text.as_bytes().to_vec());
        }
        match config::load(tree) {
            Ok(repo) => repo,
            Err(diags) => panic!("invalid test repo: {diags}"),
        }
    }

    fn profile(name: &str, refs: &str) -> String {
        format!(
            "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {{name: {name}}}\n\
             spec:\n  clusterSelector: {{}}\n  policyRefs:\n{refs}"
        )
    }

    fn cm(name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\n\
             data: {{v: \"{value}\"}}\n"
        )
    }

    #[test]
    fn unchanged_profiles_table() {
        let cluster = "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c1}\n";
        let source = |v: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: src, namespace: default}}\n\
                 data:\n  a.yaml: |\n    apiVersion: v1\n    kind: ConfigMap\n    \
                 metadata: {{name: s, namespace: default}}\n    data: {{v: \"{v}\"}}\n"
            )
        };
        let base_files = |a: &str, src: &str, p2: &str| {
            vec![
                ("clusters/c.yaml".to_string(), cluster.to_string()),
                (
                    "profiles/p1.yaml".to_string(),
                    profile("p1", "  - {path: manifests/a}\n"),
                ),
                ("profiles/p2.yaml".to_string(), p2.to_string()),
                (
                    "profiles/p3.yaml".to_string(),
                    profile("p3", "  - {kind: ConfigMap, name: src}\n"),
                ),
                ("manifests/a/x.yaml".to_string(), cm("a", a)),
                ("manifests/b/y.yaml".to_string(), cm("b", "1")),
                ("sources/src.yaml".to_string(), source(src)),
            ]
        };
        let p2 = profile("p2", "  - {path: manifests/b}\n");
        let p2_changed = profile("p2", "  - {path: manifests/b, template: true}\n");
        type Case<'a> = (&'a str, Vec<(String, String)>, &'a [&'a str]);
        let cases: Vec<Case> = vec![
            ("nothing", base_files("1", "1", &p2), &["p1", "p2", "p3"]),
            ("a manifest", base_files("2", "1", &p2), &["p2", "p3"]),
            ("a source", base_files("1", "2", &p2), &["p1", "p2"]),
            (
                "a profile file",
                base_files("1", "1", &p2_changed),
                &["p1", "p3"],
            ),
        ];
        let to_repo = |files: &[(String, String)]| {
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect();
            repo(&refs)
        };
        let base = to_repo(&base_files("1", "1", &p2));
        for (name, files, want) in cases {
            let head = to_repo(&files);
            let got = unchanged_profiles(&base, &head);
            let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
