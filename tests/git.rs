//! The git adapter against real repositories made with the `git` CLI: a file:// remote, a local
//! work tree and a local bare repository, and a smart-HTTP remote behind a token
//! (`git http-backend` served by `support::git_server`), and an ssh remote served by a throwaway
//! `sshd` (skipped, with a message, where openssh-server is not installed). No mocks.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flotilla::git::{Credentials, GitError, GitSource, Note, PollResult, PushedRef};
use flotilla::source::{Entry, read_dir};
use support::git_server::GitHttpServer;

/// Runs git in `dir` with a fixed identity and no user or system config; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write file");
}

/// A work tree `work` (branch main, one commit) and its bare clone `remote.git`, in one tempdir.
struct Fixture {
    tmp: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    cache: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        let bare = tmp.path().join("remote.git");
        let cache = tmp.path().join("cache");
        std::fs::create_dir_all(&work).expect("mkdir work");
        git(&work, &["init", "-q", "-b", "main"]);
        write(&work.join("config/clusters/a.yaml"), "name: a\n");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first commit"]);
        git(tmp.path(), &["clone", "-q", "--bare", "work", "remote.git"]);
        git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf-8")],
        );
        Fixture {
            tmp,
            work,
            bare,
            cache,
        }
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Commits `content` at `path` in the work tree and pushes it to the bare remote.
    fn commit_and_push(&self, path: &str, content: &str, message: &str) -> String {
        write(&self.work.join(path), content);
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        self.head()
    }

    fn bare_note(&self, notes_ref: &str, commit: &str) -> String {
        git(&self.bare, &["notes", "--ref", notes_ref, "show", commit])
    }
}

/// Size and modification time of every file under `dir`: evidence that nothing was written.
fn dir_state(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut state = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                state.insert(entry.path(), (meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    state
}

fn object_count(git_dir: &Path) -> usize {
    dir_state(&git_dir.join("objects")).len()
}

#[test]
fn file_remote_poll_fetches_only_when_the_branch_moved() {
    let f = Fixture::new();
    let first = f.head();
    let mut source =
        GitSource::open(&f.file_url(), "main", Credentials::default(), &f.cache).expect("open");
    assert!(source.is_remote());
    assert_eq!(source.display_url(), f.file_url());
    assert!(
        source.git_dir().starts_with(&f.cache),
        "mirror under the cache"
    );

    let poll = source.poll().expect("first poll");
    assert_eq!(
        poll,
        PollResult {
            commit: first.clone(),
            fetched: true
        }
    );
    let mirror = source.git_dir().to_path_buf();
    let before = dir_state(&mirror);
    assert!(object_count(&mirror) > 0, "objects were fetched");

    // Nothing new: no fetch, and not one byte of the mirror changes.
    std::thread::sleep(Duration::from_millis(20));
    let poll = source.poll().expect("second poll");
    assert_eq!(
        poll,
        PollResult {
            commit: first.clone(),
            fetched: false
        }
    );
    assert_eq!(
        dir_state(&mirror),
        before,
        "a no-op poll must not write to the mirror"
    );

    // The mirror persists: a restarted daemon (new GitSource, same cache) does not fetch again.
    let mut restarted =
        GitSource::open(&f.file_url(), "main", Credentials::default(), &f.cache).expect("reopen");
    assert_eq!(restarted.git_dir(), mirror);
    assert!(!restarted.poll().expect("poll after reopen").fetched);
    drop(restarted);

    // A new commit and a note written by someone else: both arrive with one fetch.
    let second = f.commit_and_push("config/clusters/b.yaml", "name: b\n", "add b");
    git(
        &f.bare,
        &[
            "notes",
            "--ref",
            "flotilla",
            "add",
            "-m",
            "note from CI",
            &first,
        ],
    );
    let poll = source.poll().expect("third poll");
    assert_eq!(
        poll,
        PollResult {
            commit: second.clone(),
            fetched: true
        }
    );
    assert_ne!(dir_state(&mirror), before);
    let tree = source.snapshot(&second, Some("config")).expect("snapshot");
    assert_eq!(
        tree.entry("clusters/b.yaml"),
        Some(&Entry::File(b"name: b\n".to_vec()))
    );
    assert_eq!(
        source
            .read_note("refs/notes/flotilla", &first)
            .expect("read note"),
        Some("note from CI\n".to_string())
    );
    assert_eq!(source.commit_summary(&second).expect("summary"), "add b");
    assert_eq!(source.resolve("main~1").expect("resolve"), first);
    assert!(
        source.watch().expect("watch").is_none(),
        "remotes are polled"
    );
}

/// `--plan-refs`: the refs matching a glob are listed with one connection; only those that
/// moved are fetched (a second listing changes no mirror file); the review base is the merge
/// base with the branch. A local repository is read in place.
#[test]
fn review_refs_matching_a_glob_are_listed_and_fetched_only_when_they_move() {
    let f = Fixture::new();
    let main = f.head();
    // Two pull-request heads on the remote (as GitHub publishes them), one other ref.
    git(&f.work, &["checkout", "-q", "-b", "pr1"]);
    write(&f.work.join("config/profiles/p.yaml"), "one\n");
    git(&f.work, &["add", "-A"]);
    git(&f.work, &["commit", "-q", "-m", "pr 1"]);
    let pr1 = f.head();
    git(&f.work, &["push", "-q", "origin", "pr1:refs/pull/1/head"]);
    git(&f.work, &["push", "-q", "origin", "pr1:refs/pull/1/merge"]);
    git(&f.work, &["push", "-q", "origin", "main:refs/pull/2/head"]);

    let mut source =
        GitSource::open(&f.file_url(), "main", Credentials::default(), &f.cache).expect("open");
    source.poll().expect("poll");
    let (found, logs) = capture_logs(|| source.matching_refs("refs/pull/*/head"));
    let found = found.expect("list");
    let names: Vec<(&str, &str)> = found
        .iter()
        .map(|r| (r.name.as_str(), r.commit.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("refs/pull/1/head", pr1.as_str()),
            ("refs/pull/2/head", main.as_str())
        ]
    );
    assert!(logs.contains("fetched review refs"), "{logs}");
    // The head's commit is in the mirror now: it can be read and reviewed.
    assert_eq!(source.commit_summary(&pr1).expect("summary"), "pr 1");
    assert_eq!(source.merge_base(&main, &pr1).expect("merge base"), main);

    // Nothing moved: nothing fetched, no mirror file changed.
    let mirror = source.git_dir().to_path_buf();
    let before = dir_state(&mirror);
    let (again, logs) = capture_logs(|| source.matching_refs("refs/pull/*/head"));
    assert_eq!(again.expect("list again"), found);
    assert!(!logs.contains("fetched review refs"), "{logs}");
    assert_eq!(dir_state(&mirror), before, "the mirror changed");

    // A local repository: its own refs, read in place.
    let local = GitSource::open(
        f.bare.to_str().expect("utf-8"),
        "main",
        Credentials::default(),
        &f.cache,
    );
    let found = local
        .expect("open local")
        .matching_refs("refs/pull/*/head")
        .expect("list local");
    assert_eq!(found.len(), 2);
}

#[test]
fn poll_reports_a_missing_branch() {
    let f = Fixture::new();
    let mut source =
        GitSource::open(&f.file_url(), "nope", Credentials::default(), &f.cache).expect("open");
    let err = source.poll().expect_err("no such branch");
    assert!(
        matches!(&err, GitError::BranchNotFound { branch, .. } if branch == "nope"),
        "{err:?}"
    );
    let err = GitSource::open("/does/not/exist", "main", Credentials::default(), &f.cache)
        .expect_err("missing dir");
    assert!(matches!(err, GitError::InvalidRepo { .. }), "{err:?}");
}

#[test]
fn snapshot_reads_a_commit_without_a_work_tree() {
    let f = Fixture::new();
    let work = &f.work;
    write(&work.join("README.md"), "# config repo\n");
    write(
        &work.join("config/profiles/p.yaml"),
        "kind: ClusterProfile\n",
    );
    write(
        &work.join("config/profiles/nested/deep/values.yaml"),
        "replicas: 2\n",
    );
    write(&work.join("config/scripts/run.sh"), "#!/bin/sh\necho hi\n");
    std::os::unix::fs::symlink(
        "profiles/nested/deep/values.yaml",
        work.join("config/values-link.yaml"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink("../../etc/passwd", work.join("config/escaping-link"))
        .expect("symlink");
    git(
        work,
        &[
            "update-index",
            "--chmod=+x",
            "--add",
            "config/scripts/run.sh",
        ],
    );
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", "profiles\n\nwith a body"]);
    let commit = f.head();
    let first = git(work, &["rev-parse", "HEAD~1"]);

    // Local work tree, used in place.
    let source = GitSource::open(
        work.to_str().expect("utf-8"),
        "main",
        Credentials::default(),
        &f.cache,
    )
    .expect("open");
    assert!(!source.is_remote());

    // Same tree as reading the checkout from disk, symlinks kept as links.
    let config = source.snapshot(&commit, Some("config")).expect("snapshot");
    assert_eq!(config, read_dir(&work.join("config")).expect("read_dir"));
    assert_eq!(
        config.entry("values-link.yaml"),
        Some(&Entry::Symlink("profiles/nested/deep/values.yaml".into()))
    );
    assert_eq!(
        config.entry("escaping-link"),
        Some(&Entry::Symlink("../../etc/passwd".into()))
    );
    assert_eq!(
        config.entry("profiles/nested/deep/values.yaml"),
        Some(&Entry::File(b"replicas: 2\n".to_vec()))
    );
    assert_eq!(config.len(), 6);
    let whole = source.snapshot(&commit, None).expect("whole tree");
    assert_eq!(whole, read_dir(work).expect("read_dir"));
    assert!(whole.entry("README.md").is_some());
    assert_eq!(
        source
            .snapshot(&commit, Some("./config/"))
            .expect("normalized"),
        config
    );

    // The commit's content, not the work tree's.
    write(&work.join("config/profiles/p.yaml"), "uncommitted\n");
    let again = source.snapshot(&commit, Some("config")).expect("snapshot");
    assert_eq!(
        again.entry("profiles/p.yaml"),
        Some(&Entry::File(b"kind: ClusterProfile\n".to_vec()))
    );
    let old = source.snapshot(&first, Some("config")).expect("old commit");
    assert_eq!(old.len(), 1);
    assert!(old.entry("clusters/a.yaml").is_some());
    // Short ids and revisions work too.
    assert_eq!(
        source
            .snapshot(&commit[..10], Some("config"))
            .expect("short id"),
        config
    );
    assert_eq!(source.commit_summary(&commit).expect("summary"), "profiles");
    assert_eq!(source.resolve("HEAD~1").expect("resolve"), first);
    assert_eq!(source.resolve("main").expect("resolve"), commit);

    let err = source
        .snapshot(&commit, Some("missing"))
        .expect_err("missing subdir");
    assert!(
        matches!(&err, GitError::Subdir { subdir, reason, .. } if subdir == "missing" && reason == "does not exist"),
        "{err:?}"
    );
    assert!(err.to_string().contains(&commit), "{err}");
    let err = source
        .snapshot(&commit, Some("README.md"))
        .expect_err("a file");
    assert!(
        matches!(&err, GitError::Subdir { reason, .. } if reason == "is not a directory"),
        "{err:?}"
    );
    for rev in ["0123456789abcdef0123456789abcdef01234567", "no-such-rev"] {
        let err = source.snapshot(rev, None).expect_err("unknown commit");
        assert!(
            matches!(&err, GitError::RevNotFound { rev: r, .. } if r == rev),
            "{err:?}"
        );
    }
}

#[test]
fn snapshot_refuses_a_file_over_16_mib() {
    let f = Fixture::new();
    let big = f.work.join("config/big.bin");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(16 * 1024 * 1024 + 1).expect("size");
    drop(file);
    git(&f.work, &["add", "-A"]);
    git(&f.work, &["commit", "-q", "-m", "big"]);
    let source = GitSource::open(
        f.work.to_str().expect("utf-8"),
        "main",
        Credentials::default(),
        &f.cache,
    )
    .expect("open");
    let err = source
        .snapshot(&f.head(), Some("config"))
        .expect_err("too large");
    assert!(
        matches!(&err, GitError::TooLarge { path, size, .. } if path == "big.bin" && *size == 16 * 1024 * 1024 + 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("big.bin"), "{err}");
}

#[test]
fn notes_are_pushed_and_merged_with_a_concurrent_writer() {
    let f = Fixture::new();
    let a = f.head();
    let b = f.commit_and_push("config/clusters/b.yaml", "name: b\n", "add b");
    let mut source =
        GitSource::open(&f.file_url(), "main", Credentials::default(), &f.cache).expect("open");
    source.poll().expect("poll");

    let note = |notes_ref: &str, commit: &str, text: &str| Note {
        notes_ref: notes_ref.to_string(),
        commit: commit.to_string(),
        text: text.to_string(),
    };
    let report = source
        .publish_notes(
            &[
                note("flotilla", &a, "synced a v1\n"),
                note("refs/notes/flotilla-state", &a, "{\"v\":1}\n"),
            ],
            true,
        )
        .expect("publish");
    assert_eq!(
        report.pushed,
        vec![
            PushedRef {
                notes_ref: "refs/notes/flotilla".into(),
                attempts: 1
            },
            PushedRef {
                notes_ref: "refs/notes/flotilla-state".into(),
                attempts: 1
            },
        ]
    );
    assert_eq!(f.bare_note("flotilla", &a), "synced a v1");
    assert_eq!(f.bare_note("flotilla-state", &a), "{\"v\":1}");
    assert_eq!(
        git(
            &f.bare,
            &[
                "log",
                "-1",
                "--format=%an <%ae>|%cn <%ce>",
                "refs/notes/flotilla"
            ]
        ),
        "flotilla <flotilla@localhost>|flotilla <flotilla@localhost>"
    );

    // Our own note on the same commit is overwritten; the notes ref's history keeps both.
    source
        .publish_notes(&[note("flotilla", &a, "synced a v2\n")], true)
        .expect("publish v2");
    assert_eq!(f.bare_note("flotilla", &a), "synced a v2");
    assert_eq!(
        git(&f.bare, &["rev-list", "--count", "refs/notes/flotilla"]),
        "2"
    );
    assert_eq!(
        source.read_note("flotilla", &a).expect("read"),
        Some("synced a v2\n".into())
    );
    assert_eq!(source.read_note("flotilla", &b).expect("read"), None);
    assert_eq!(source.read_note("no-such-notes", &a).expect("read"), None);

    // Another writer pushes a note on a different commit to the same notes ref.
    git(f.tmp.path(), &["clone", "-q", "remote.git", "other"]);
    let other = f.tmp.path().join("other");
    git(
        &other,
        &["fetch", "-q", "origin", "refs/notes/*:refs/notes/*"],
    );
    git(
        &other,
        &[
            "notes",
            "--ref",
            "flotilla",
            "add",
            "-m",
            "human note on b",
            &b,
        ],
    );
    git(&other, &["push", "-q", "origin", "refs/notes/flotilla"]);

    // Our next push is rejected (our notes ref is behind), then merged and retried.
    let report = source
        .publish_notes(&[note("flotilla", &a, "synced a v3\n")], true)
        .expect("publish v3");
    assert_eq!(
        report.pushed,
        vec![PushedRef {
            notes_ref: "refs/notes/flotilla".into(),
            attempts: 2
        }]
    );
    assert_eq!(f.bare_note("flotilla", &a), "synced a v3");
    assert_eq!(f.bare_note("flotilla", &b), "human note on b");
    // The other writer's commit is an ancestor of ours: nothing was force-pushed away.
    let other_tip = git(&other, &["rev-parse", "refs/notes/flotilla"]);
    git(
        &f.bare,
        &[
            "merge-base",
            "--is-ancestor",
            &other_tip,
            "refs/notes/flotilla",
        ],
    );

    // push=false: written locally only.
    let before = git(&f.bare, &["rev-parse", "refs/notes/flotilla"]);
    let report = source
        .publish_notes(&[note("flotilla", &b, "local only\n")], false)
        .expect("publish locally");
    assert!(report.pushed.is_empty());
    assert_eq!(git(&f.bare, &["rev-parse", "refs/notes/flotilla"]), before);
    assert_eq!(
        source.read_note("flotilla", &b).expect("read"),
        Some("local only\n".into())
    );

    let err = source
        .publish_notes(&[note("flotilla", "no-such-commit", "x")], true)
        .expect_err("unknown commit");
    assert!(matches!(err, GitError::RevNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn local_work_tree_is_read_in_place_and_watched() {
    let f = Fixture::new();
    let mut source = GitSource::open(
        f.work.to_str().expect("utf-8"),
        "main",
        Credentials::default(),
        &f.cache,
    )
    .expect("open");
    assert!(!source.is_remote());
    assert_eq!(
        source.poll().expect("poll"),
        PollResult {
            commit: f.head(),
            fetched: false
        }
    );
    assert!(!f.cache.exists(), "no mirror for a local repository");

    let watcher = source
        .watch()
        .expect("watch")
        .expect("a local repo is watched");
    write(&f.work.join("config/clusters/c.yaml"), "name: c\n");
    git(&f.work, &["add", "-A"]);
    // Commit on another thread while this one waits for the signal.
    let work = f.work.clone();
    let commit = tokio::task::spawn_blocking(move || git(&work, &["commit", "-q", "-m", "add c"]));
    tokio::time::timeout(Duration::from_secs(5), watcher.changed())
        .await
        .expect("the watcher signals a commit");
    let signalled = SystemTime::now();
    commit.await.expect("git commit");
    // Latency from the write of the branch ref to the signal.
    let written = std::fs::metadata(f.work.join(".git/refs/heads/main"))
        .and_then(|meta| meta.modified())
        .expect("ref mtime");
    let latency = signalled
        .duration_since(written)
        .expect("the signal came after the branch ref was written, not on an earlier event");
    eprintln!("watch signalled {latency:?} after the branch ref was written");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(source.poll().expect("poll").commit, f.head());

    // Reading the repository (our own polls, git log) must not wake the watcher, or the daemon
    // would spin: drain the stored permit, read, and expect silence.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = tokio::time::timeout(Duration::from_millis(10), watcher.changed()).await;
    for _ in 0..3 {
        source.poll().expect("poll");
        source.snapshot("HEAD", None).expect("snapshot");
    }
    git(&f.work, &["log", "--oneline"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watcher.changed())
            .await
            .is_err(),
        "reads woke the watcher"
    );

    // Notes on a local repository are written in place, never pushed.
    let head = f.head();
    let report = source
        .publish_notes(
            &[Note {
                notes_ref: "flotilla".into(),
                commit: head.clone(),
                text: "synced\n".into(),
            }],
            true,
        )
        .expect("publish");
    assert!(report.pushed.is_empty());
    assert_eq!(
        git(&f.work, &["notes", "--ref", "flotilla", "show", &head]),
        "synced"
    );
}

#[tokio::test]
async fn local_bare_repository_is_watched() {
    let f = Fixture::new();
    let mut source = GitSource::open(
        f.bare.to_str().expect("utf-8"),
        "main",
        Credentials::default(),
        &f.cache,
    )
    .expect("open");
    assert_eq!(source.poll().expect("poll").commit, f.head());
    let watcher = source.watch().expect("watch").expect("watched");
    let notify = watcher.notify();

    let started = Instant::now();
    let pushed = f.commit_and_push("config/clusters/d.yaml", "name: d\n", "add d");
    tokio::time::timeout(Duration::from_secs(5), notify.notified())
        .await
        .expect("the watcher signals a push");
    eprintln!(
        "bare watch signalled {:?} after the push started",
        started.elapsed()
    );
    assert_eq!(source.poll().expect("poll").commit, pushed);

    // Packing the refs moves the branch into packed-refs: still seen.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = tokio::time::timeout(Duration::from_millis(10), notify.notified()).await;
    git(&f.bare, &["pack-refs", "--all"]);
    tokio::time::timeout(Duration::from_secs(5), notify.notified())
        .await
        .expect("the watcher signals pack-refs");
    assert_eq!(source.poll().expect("poll").commit, pushed);
}

/// Collects everything logged through `tracing` while `f` runs, at every level.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer(Arc::new(Mutex::new(Vec::new())));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8_lossy(&buffer.0.lock().expect("lock")).into_owned();
    (result, logs)
}

const TOKEN: &str = "tok-3f9c2a71-right";
const WRONG: &str = "tok-0b1d55e2-wrong";

fn with_token(token: &str) -> Credentials {
    Credentials {
        token: Some(token.to_string()),
        ..Credentials::default()
    }
}

#[test]
fn smart_http_with_a_token() {
    let f = Fixture::new();
    let server = GitHttpServer::start(f.tmp.path(), TOKEN);
    let url = server.url("remote.git");
    let head = f.head();

    let (_, logs) = capture_logs(|| {
        let mut source = GitSource::open(&url, "main", with_token(TOKEN), &f.cache).expect("open");
        assert_eq!(
            source.poll().expect("poll over http"),
            PollResult {
                commit: head.clone(),
                fetched: true
            }
        );
        let tree = source.snapshot(&head, Some("config")).expect("snapshot");
        assert_eq!(
            tree.entry("clusters/a.yaml"),
            Some(&Entry::File(b"name: a\n".to_vec()))
        );
        let requests = server.requests();
        assert!(!source.poll().expect("second poll").fetched);
        // A no-op poll is one ref listing: the 401 challenge and the authorized request.
        assert!(server.requests() - requests <= 2, "{:?}", server.log());

        let report = source
            .publish_notes(
                &[Note {
                    notes_ref: "flotilla".into(),
                    commit: head.clone(),
                    text: "synced over http\n".into(),
                }],
                true,
            )
            .expect("push notes over http");
        assert_eq!(report.pushed.len(), 1);
        assert_eq!(f.bare_note("flotilla", &head), "synced over http");
        // libgit2 streams the pack with Transfer-Encoding: chunked; the server decoded it.
        assert!(
            server
                .log()
                .iter()
                .any(|line| line.contains("git-receive-pack") && line.contains("chunked) -> 200")),
            "{:#?}",
            server.log()
        );

        let second = f.commit_and_push("config/clusters/b.yaml", "name: b\n", "add b");
        let poll = source.poll().expect("poll after a push");
        assert_eq!(poll.commit, second);
        assert!(poll.fetched);
        let debug = format!("{source:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
    });
    assert!(!logs.contains(TOKEN), "the token was logged:\n{logs}");
    assert!(logs.contains("fetched a new commit"), "{logs}");

    // A token carried in the URL works and is never shown.
    let with_userinfo = server.url_with_userinfo("remote.git", "x-access-token", TOKEN);
    let other_cache = f.tmp.path().join("cache-userinfo");
    let mut source = GitSource::open(&with_userinfo, "main", Credentials::default(), &other_cache)
        .expect("open");
    assert_eq!(
        source.display_url(),
        format!(
            "http://***@{}",
            server.url("remote.git").trim_start_matches("http://")
        )
    );
    assert!(source.poll().expect("poll with a token in the URL").fetched);
}

#[test]
fn smart_http_with_a_wrong_token_fails_fast_without_leaking_it() {
    let f = Fixture::new();
    let server = GitHttpServer::start(f.tmp.path(), TOKEN);
    let url = server.url("remote.git");

    let ((err, elapsed), logs) = capture_logs(|| {
        let mut source = GitSource::open(&url, "main", with_token(WRONG), &f.cache).expect("open");
        let started = Instant::now();
        let err = source.poll().expect_err("wrong token");
        (err, started.elapsed())
    });
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let requests = server.requests();
    assert!(
        requests <= 4,
        "a retry storm: {requests} requests: {:?}",
        server.log()
    );
    let shown = format!("{err}");
    let debug = format!("{err:?}");
    assert!(shown.contains("FLOTILLA_GIT_TOKEN"), "{shown}");
    assert!(shown.contains(&url), "{shown}");
    for text in [&shown, &debug, &logs] {
        assert!(!text.contains(WRONG), "the token leaked: {text}");
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
    }
    eprintln!("wrong token: {shown} ({elapsed:?}, {requests} requests)");

    // No token at all: the same clear error.
    let mut source = GitSource::open(&url, "main", Credentials::default(), &f.cache).expect("open");
    let err = source.poll().expect_err("no token");
    assert!(
        matches!(&err, GitError::Auth { detail, .. } if detail.contains("no token")),
        "{err:?}"
    );

    // A wrong token inside the URL is redacted from the error too.
    let bad_url = server.url_with_userinfo("remote.git", "x-access-token", WRONG);
    let mut source = GitSource::open(
        &bad_url,
        "main",
        Credentials::default(),
        &f.tmp.path().join("cache-bad"),
    )
    .expect("open");
    let before = server.requests();
    let err = source.poll().expect_err("wrong token in the URL");
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    assert!(server.requests() - before <= 4, "{:?}", server.log());
    assert!(!format!("{err} {err:?}").contains(WRONG), "{err:?}");
}

#[test]
fn notes_push_rejected_by_the_server_gives_up_after_five_attempts() {
    let f = Fixture::new();
    // The remote refuses every update of a notes ref (server-side, reported per ref).
    let hook = f.bare.join("hooks/update");
    write(
        &hook,
        "#!/bin/sh\ncase \"$1\" in refs/notes/*) echo 'notes are frozen' >&2; exit 1;; esac\nexit 0\n",
    );
    let mut perms = std::fs::metadata(&hook).expect("hook").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).expect("chmod");
    let server = GitHttpServer::start(f.tmp.path(), TOKEN);
    let mut source = GitSource::open(
        &server.url("remote.git"),
        "main",
        with_token(TOKEN),
        &f.cache,
    )
    .expect("open");
    source.poll().expect("poll");
    let head = f.head();
    let err = source
        .publish_notes(
            &[Note {
                notes_ref: "flotilla".into(),
                commit: head.clone(),
                text: "x\n".into(),
            }],
            true,
        )
        .expect_err("rejected");
    assert!(
        matches!(&err, GitError::NotesRejected { attempts: 5, notes_ref, .. } if notes_ref == "refs/notes/flotilla"),
        "{err:?}"
    );
    let pushes = server
        .log()
        .iter()
        .filter(|line| {
            line.starts_with("POST") && line.contains("git-receive-pack") && line.contains("200")
        })
        .count();
    assert_eq!(pushes, 5, "{:?}", server.log());
    // Kept locally for the next attempt.
    assert_eq!(
        source.read_note("flotilla", &head).expect("read"),
        Some("x\n".into())
    );
}

/// A throwaway OpenSSH server on a loopback port, running as the current user with its own host
/// key and authorized key. Killed on drop.
struct SshServer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SshServer {
    /// `None` (the test is skipped) when sshd is not installed or we are not root, which sshd's
    /// privilege separation needs.
    fn start() -> Option<SshServer> {
        let sshd = Path::new("/usr/sbin/sshd");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        if !sshd.exists() || !root {
            eprintln!("skipped: needs /usr/sbin/sshd (Debian openssh-server) and root");
            return None;
        }
        std::fs::create_dir_all("/run/sshd").expect("privilege separation directory");
        let dir = tempfile::tempdir().expect("tempdir");
        let keygen = |name: &str| {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(dir.path().join(name))
                .status()
                .expect("ssh-keygen");
            assert!(status.success());
        };
        keygen("host_key");
        keygen("client_key");
        keygen("other_key");
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let config = dir.path().join("sshd_config");
        write(
            &config,
            &format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile none\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nLogLevel ERROR\n",
                dir = dir.path().display()
            ),
        );
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(SshServer { child, port, dir })
    }

    fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A known_hosts file listing `[127.0.0.1]:port` with the public key `pub_name`.
    fn known_hosts(&self, pub_name: &str) -> PathBuf {
        let public = std::fs::read_to_string(self.key(pub_name)).expect("public key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().expect("type"), fields.next().expect("key"));
        let path = self.dir.path().join(format!("known_hosts-{pub_name}"));
        write(
            &path,
            &format!("# test\n[127.0.0.1]:{} {kind} {key}\n", self.port),
        );
        path
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_with_a_key_and_known_hosts() {
    let Some(server) = SshServer::start() else {
        return;
    };
    let f = Fixture::new();
    let url = server.url(&f.bare);
    let head = f.head();
    let credentials = |key: &str, known_hosts: PathBuf, allow_unknown_hosts: bool| Credentials {
        token: None,
        ssh_key: Some(server.key(key)),
        known_hosts: Some(known_hosts),
        allow_unknown_hosts,
    };
    let trusted = server.known_hosts("host_key.pub");
    let wrong_host_key = server.known_hosts("other_key.pub");
    let empty = f.tmp.path().join("known_hosts-empty");
    write(&empty, "");

    // Host key listed, client key authorized: poll, snapshot and push notes.
    let mut source = GitSource::open(
        &url,
        "main",
        credentials("client_key", trusted.clone(), false),
        &f.cache,
    )
    .expect("open");
    assert_eq!(
        source.poll().expect("poll over ssh"),
        PollResult {
            commit: head.clone(),
            fetched: true
        }
    );
    assert!(!source.poll().expect("second poll").fetched);
    assert!(
        source
            .snapshot(&head, Some("config"))
            .expect("snapshot")
            .entry("clusters/a.yaml")
            .is_some()
    );
    source
        .publish_notes(
            &[Note {
                notes_ref: "flotilla".into(),
                commit: head.clone(),
                text: "synced over ssh\n".into(),
            }],
            true,
        )
        .expect("push over ssh");
    assert_eq!(f.bare_note("flotilla", &head), "synced over ssh");

    // Unknown host: refused, unless explicitly allowed.
    let cache = f.tmp.path().join("cache2");
    let err = GitSource::open(
        &url,
        "main",
        credentials("client_key", empty.clone(), false),
        &cache,
    )
    .expect("open")
    .poll()
    .expect_err("unknown host");
    assert!(
        matches!(&err, GitError::HostKey { reason, .. } if reason.contains("is not in")),
        "{err:?}"
    );
    GitSource::open(&url, "main", credentials("client_key", empty, true), &cache)
        .expect("open")
        .poll()
        .expect("unknown host allowed");

    // A different key on record: refused even with allow_unknown_hosts.
    let err = GitSource::open(
        &url,
        "main",
        credentials("client_key", wrong_host_key, true),
        &cache,
    )
    .expect("open")
    .poll()
    .expect_err("changed host key");
    assert!(
        matches!(&err, GitError::HostKey { reason, .. } if reason.contains("different key")),
        "{err:?}"
    );

    // A key the server does not accept: a fast, clear authentication error.
    let started = Instant::now();
    let err = GitSource::open(
        &url,
        "main",
        credentials("other_key", trusted, false),
        &cache,
    )
    .expect("open")
    .poll()
    .expect_err("unauthorized key");
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains("--ssh-key"), "{err}");
}
