#!/usr/bin/env bash
# Builds what the container image ships, the way deploy/Dockerfile builds it (its build stages run
# this script): flotilla with `cargo build --release --locked`, and the pinned helm and kustomize
# of scripts/lib/pins.sh built by scripts/testbin.sh (cached, so the tests and the image run the
# same versions). Works on a fresh machine: it needs cargo and Go, as scripts/test.sh does.
#
#   scripts/build-release.sh [--only PART]... [OUTDIR]
#
#   OUTDIR          default dist/ (git-ignored); gets bin/{flotilla,helm,kustomize} and
#                   manifest.txt (one line per binary: name, version, sha256)
#   --only PART     flotilla | tools | manifest (repeatable; default: all three, in that order).
#                   The Dockerfile builds flotilla and the tools in separate stages this way.
#   CARGO_TARGET_DIR   honoured (relative to the current directory, as cargo reads it)
#   FLOTILLA_TESTBIN   scripts/testbin.sh's cache (default $HOME/.cache/flotilla/testbin)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/pins.sh
source "$root/scripts/lib/pins.sh"

# usage [STATUS] — the header above; exit STATUS (default 2: a wrong invocation).
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

parts=()
outdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only)
      [ $# -ge 2 ] || usage
      case "$2" in flotilla|tools|manifest) parts+=("$2") ;; *) usage ;; esac
      shift 2 ;;
    -h|--help) usage 0 ;;
    -*) usage ;;
    *) [ -z "$outdir" ] || usage; outdir=$1; shift ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(flotilla tools manifest)
outdir=${outdir:-$root/dist}
mkdir -p "$outdir/bin"
outdir=$(cd "$outdir" && pwd)
# Resolved before any cd, so a relative CARGO_TARGET_DIR means what it means to the caller.
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")

log() { printf 'build-release: %s\n' "$*" >&2; }

build_flotilla() {
  log "cargo build --release --locked (target dir $target_dir)"
  (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --release --locked)
  install -m 0755 "$target_dir/release/flotilla" "$outdir/bin/flotilla"
}

build_tools() {
  local cache=${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}
  log "helm $HELM_VERSION and kustomize $KUSTOMIZE_VERSION via scripts/testbin.sh (cache $cache)"
  FLOTILLA_TESTBIN="$cache" "$root/scripts/testbin.sh" helm kustomize
  install -m 0755 "$cache/helm-$HELM_VERSION" "$outdir/bin/helm"
  install -m 0755 "$cache/kustomize-$KUSTOMIZE_VERSION" "$outdir/bin/kustomize"
}

# The versions are the pins (helm's and kustomize's own version output depends on how they were
# built); flotilla's is what the binary reports, which also proves it runs here.
write_manifest() {
  local name file version
  {
    echo "# flotilla release: name version sha256 (scripts/build-release.sh)"
    for name in flotilla helm kustomize; do
      file="$outdir/bin/$name"
      [ -x "$file" ] || { log "manifest: $file is missing"; exit 1; }
      case "$name" in
        flotilla) version=$("$file" --version | awk '{print $2}') ;;
        helm) version=$HELM_VERSION ;;
        kustomize) version=$KUSTOMIZE_VERSION ;;
      esac
      printf '%s %s %s\n' "$name" "$version" "$(sha256sum "$file" | cut -d' ' -f1)"
    done
  } > "$outdir/manifest.txt.tmp"
  mv "$outdir/manifest.txt.tmp" "$outdir/manifest.txt"
}

for part in "${parts[@]}"; do
  case "$part" in
    flotilla) build_flotilla ;;
    tools) build_tools ;;
    manifest) write_manifest ;;
  esac
done
log "$outdir:"
(cd "$outdir" && ls -l bin/ && { [ ! -f manifest.txt ] || cat manifest.txt; }) >&2
