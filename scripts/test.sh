#!/usr/bin/env bash
# The whole test suite, from a fresh machine: builds the real test binaries (kube-apiserver in
# two versions, etcd, helm, kustomize; cached outside the repo, a no-op when present), then
# checks formatting and lints and runs every test, integration tests against real control planes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbin.sh
# The ssh transport test needs a real sshd (Debian's openssh-server); git-http-backend comes with
# git. Installed when missing and possible (root with apt); otherwise that one test says
# "skipped" and the rest still run.
if [ ! -x /usr/sbin/sshd ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq openssh-server >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq openssh-server >/dev/null 2>&1; } \
    || echo "test.sh: could not install openssh-server; the ssh transport test will be skipped" >&2
fi
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
