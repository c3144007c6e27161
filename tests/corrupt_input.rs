//! Corrupted copies of example-repo files fed to the loader: truncated, binary garbage, wrong
//! types, deeply nested, very large. Each must give a clean error naming the file (or load
//! cleanly, for a truncation that happens to be valid) and never panic.

use std::path::Path;

use flotilla::config;
use flotilla::source::{Entry, FileTree, read_dir};

fn example() -> FileTree {
    read_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo")).expect("example-repo")
}

fn config_files(tree: &FileTree) -> Vec<(String, Vec<u8>)> {
    ["clusters", "profiles", "classifiers", "sources"]
        .iter()
        .flat_map(|dir| {
            tree.entries_under(dir)
                .filter_map(|(p, e)| match e {
                    Entry::File(b) => Some((p.to_string(), b.clone())),
                    Entry::Symlink(_) => None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A small deterministic generator, so failures reproduce.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn load_with(path: &str, bytes: Vec<u8>) -> Result<config::ConfigRepo, config::Diagnostics> {
    let mut tree = example();
    tree.insert_file(path, bytes);
    config::load(tree)
}

fn assert_error_names(
    path: &str,
    what: &str,
    result: Result<config::ConfigRepo, config::Diagnostics>,
) {
    match result {
        Ok(_) => panic!("{what} of {path}: loaded as valid"),
        Err(diags) => {
            assert!(!diags.0.is_empty());
            assert!(
                diags
                    .0
                    .iter()
                    .any(|d| d.file == path && d.line >= 1 && !d.message.is_empty()),
                "{what} of {path}: no diagnostic names the file: {diags}"
            );
        }
    }
}

#[test]
fn example_repo_is_valid() {
    config::load(example()).expect("example-repo is valid");
}

#[test]
fn truncated_files_never_panic() {
    let tree = example();
    for (path, bytes) in config_files(&tree) {
        for cut in [
            1,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() * 2 / 3,
            bytes.len() - 1,
        ] {
            let result = load_with(&path, bytes[..cut].to_vec());
            if let Err(diags) = result {
                assert!(
                    diags.0.iter().all(|d| d.line >= 1 && !d.file.is_empty()),
                    "{diags}"
                );
            }
        }
    }
}

#[test]
fn binary_garbage_is_a_clean_error() {
    let tree = example();
    for (i, (path, _)) in config_files(&tree).into_iter().enumerate() {
        for seed in 0..8u64 {
            let result = load_with(&path, garbage(seed + i as u64 * 100, 4096));
            assert_error_names(&path, "garbage", result);
        }
    }
}

#[test]
fn wrong_types_are_clean_errors() {
    let tree = example();
    for (path, bytes) in config_files(&tree) {
        let text = String::from_utf8(bytes).expect("utf8");
        // Every `name: x` becomes a list, every flow mapping a number.
        let variants = [
            text.replace("name: ", "name: [1, 2] #"),
            text.replace("spec:", "spec: 42\nignored:"),
            text.replace("metadata:", "metadata: \"a string\"\nx:"),
        ];
        for (v, variant) in variants.into_iter().enumerate() {
            if variant == text {
                continue;
            }
            assert_error_names(
                &path,
                &format!("wrong types #{v}"),
                load_with(&path, variant.into_bytes()),
            );
        }
    }
}

#[test]
fn deeply_nested_documents_are_refused_without_overflow() {
    for (path, nested) in [
        (
            "profiles/deep.yaml",
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        (
            "clusters/deep.yaml",
            format!("a: {}1{}", "{b: ".repeat(50_000), "}".repeat(50_000)),
        ),
        (
            "sources/deep.yaml",
            (0..2000)
                .map(|i| format!("{}- x\n", "  ".repeat(i)))
                .collect::<String>(),
        ),
    ] {
        assert_error_names(path, "deep nesting", load_with(path, nested.into_bytes()));
    }
}

#[test]
fn very_large_files_load_or_fail_cleanly() {
    // 20,000 clusters in one file: valid, and every one is loaded.
    let mut many = String::new();
    for i in 0..20_000 {
        many.push_str(&format!(
            "---\napiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: bulk-{i}\n  labels: {{env: prod}}\n"
        ));
    }
    let repo = load_with("clusters/bulk.yaml", many.into_bytes()).expect("large valid file");
    assert_eq!(repo.clusters.len(), 20_000 + 4);

    // One 8 MiB scalar in a source that must be manifests: a clean error for that file.
    // (It replaces the platform-baseline source, which a profile references as manifests.)
    let huge = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: platform-baseline}}\ndata:\n  a.yaml: \"{}\"\n",
        "x".repeat(8 * 1024 * 1024)
    );
    assert_error_names(
        "sources/baseline.yaml",
        "huge scalar",
        load_with("sources/baseline.yaml", huge.into_bytes()),
    );

    // A billion-laughs alias bomb is stopped by the parser's budget.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
            (b'a' + i) as char,
            (b'a' + i) as char,
            p = (b'a' + i - 1) as char
        ));
    }
    assert_error_names(
        "profiles/bomb.yaml",
        "alias bomb",
        load_with("profiles/bomb.yaml", bomb.into_bytes()),
    );
}
