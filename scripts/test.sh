#!/usr/bin/env bash
# The whole test suite, from a fresh machine: builds the real test binaries (kube-apiserver in
# two versions, etcd, helm, kustomize; cached outside the repo, a no-op when present), then
# checks formatting and lints and runs every test, integration tests against real control planes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbin.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
