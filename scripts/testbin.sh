#!/usr/bin/env bash
# Builds the real binaries that flotilla's tests, demo and benchmarks run against, from the Go
# module proxy, into a cache outside the repository. Idempotent: a binary already in the cache is
# kept, so a second run takes seconds. Prints what the cache holds.
#
#   scripts/testbin.sh            every binary below
#   scripts/testbin.sh TOOL...    only these (etcd, helm, kustomize, registry, kube-apiserver,
#                                 kubectl); scripts/build-release.sh and deploy/Dockerfile build
#                                 `helm kustomize` this way for the release
#
#   FLOTILLA_TESTBIN   cache directory (default: $HOME/.cache/flotilla/testbin)
#
# Versions: scripts/lib/pins.sh.
# Layout: $FLOTILLA_TESTBIN/kube-apiserver-v1.34.4, kube-apiserver-v1.37.2, kubectl-v1.37.2,
#         etcd-v3.6.16, helm-v4.3.1, kustomize-v5.7.1, registry-v3.0.0 (the CNCF distribution
#         OCI registry, for helm's oci:// tests), and version-less symlinks for the newest.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/pins.sh"

ALL_TOOLS=(etcd helm kustomize registry kube-apiserver kubectl)
if [ $# -eq 0 ]; then TOOLS=("${ALL_TOOLS[@]}"); else TOOLS=("$@"); fi
for tool in "${TOOLS[@]}"; do
  case " ${ALL_TOOLS[*]} " in
    *" $tool "*) ;;
    *) echo "testbin: unknown tool $tool (known: ${ALL_TOOLS[*]})" >&2; exit 2 ;;
  esac
done
# wanted TOOL — whether this run builds TOOL.
wanted() { case " ${TOOLS[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

BIN="${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}"
WORK="$BIN/.build"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

log() { printf 'testbin: %s\n' "$*" >&2; }

# build_kube VERSION COMMAND... — kube-apiserver/kubectl from k8s.io/kubernetes. The module cannot
# be `go install`ed: its go.mod replaces every staging module with a local path, so a throwaway
# module requires it and replaces each staging module with its published v0.<minor>.<patch>.
build_kube() {
  local version=$1; shift
  local missing=()
  for cmd in "$@"; do [ -x "$BIN/$cmd-$version" ] || missing+=("$cmd"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local staging="v0.${version#v1.}"
  local dir="$WORK/kubernetes-$version"
  mkdir -p "$dir"
  log "building ${missing[*]} $version (this takes a while on a small machine)"
  (
    cd "$dir"
    local modfile
    modfile=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module flotilla.dev/testbin/kubernetes"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $version"
      echo
      grep -E '=> \./staging/src/' "$modfile" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } > go.mod
    {
      echo "//go:build tools"
      echo
      echo "package tools"
      echo
      for cmd in "${missing[@]}"; do echo "import _ \"k8s.io/kubernetes/cmd/$cmd\""; done
    } > tools.go
    go mod tidy
    local minor=${version#v1.}; minor=${minor%%.*}
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    for cmd in "${missing[@]}"; do
      go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd-$version.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/$cmd-$version.tmp" "$BIN/$cmd-$version"
    done
  )
}

# etcd's main package lives in a module with replace directives too; a tiny wrapper calls etcdmain.
build_etcd() {
  [ -x "$BIN/etcd-$ETCD_VERSION" ] && return 0
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  log "building etcd $ETCD_VERSION"
  (
    cd "$dir"
    cat > go.mod <<MOD
module flotilla.dev/testbin/etcd

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    cat > main.go <<'SRC'
// Command etcd runs the etcd server, exactly as the upstream binary does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
SRC
    go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd-$ETCD_VERSION.tmp" .
    mv "$BIN/etcd-$ETCD_VERSION.tmp" "$BIN/etcd-$ETCD_VERSION"
  )
}

# go_install NAME PACKAGE VERSION — tools whose modules install as they are.
go_install() {
  local name=$1 pkg=$2 version=$3
  [ -x "$BIN/$name-$version" ] && return 0
  log "building $name $version"
  local gobin="$WORK/gobin-$name-$version"
  mkdir -p "$gobin"
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "$pkg@$version"
  mv "$gobin/$name" "$BIN/$name-$version"
}

link() { ln -sfn "$2" "$BIN/$1"; }

if wanted etcd; then build_etcd; link etcd "etcd-$ETCD_VERSION"; fi
if wanted helm; then
  go_install helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION"
  link helm "helm-$HELM_VERSION"
fi
if wanted kustomize; then
  go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
  link kustomize "kustomize-$KUSTOMIZE_VERSION"
fi
if wanted registry; then
  go_install registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION"
  link registry "registry-$REGISTRY_VERSION"
fi
newest=${KUBE_VERSIONS[${#KUBE_VERSIONS[@]}-1]}
if wanted kube-apiserver; then
  for v in "${KUBE_VERSIONS[@]}"; do
    if [ "$v" = "$newest" ] && wanted kubectl; then
      build_kube "$v" kube-apiserver kubectl
    else
      build_kube "$v" kube-apiserver
    fi
  done
  link kube-apiserver "kube-apiserver-$newest"
  printf '%s\n' "${KUBE_VERSIONS[@]}" > "$BIN/kube-versions"
fi
if wanted kubectl; then
  build_kube "$newest" kubectl
  link kubectl "kubectl-$newest"
fi

log "cache $BIN holds:"
for f in "$BIN"/*-v[0-9]*; do printf '  %s\n' "$(basename "$f")"; done >&2
