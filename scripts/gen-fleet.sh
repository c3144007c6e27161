#!/usr/bin/env bash
# Writes a synthetic config repository for benchmarks and experiments: N clusters, P profiles of
# K objects each, optionally templated, plus the Namespace profile (<prefix>-ns) every other
# profile depends on.
#
#   scripts/gen-fleet.sh --out DIR [--clusters N] [--profiles P] [--objects K]
#                        [--shape configmap|mttp] [--namespace NS] [--plain]
#                        [--sync-mode MODE] [--prefix X] [--git]
#
#   --clusters N   clusters c1..cN in clusters/fleet.yaml, labelled env=bench and shard=s<i mod 10>
#                  (kubeconfigs by name: <kubeconfig-dir>/cI.kubeconfig) (default 3)
#   --profiles P   profiles p1..pP selecting env=bench (default 20)
#   --prefix X     name profiles and objects X1..XP instead of p1..pP (distinct prefixes keep
#                  the inventories of repeated runs apart: flotilla-inventory-<profile>)
#   --objects K    per profile: K ConfigMaps (shape configmap) or K apps (shape mttp) (default 10)
#   --shape        configmap: ConfigMap pI-oJ with data {cluster, shard, value: "v1"}, the first
#                  two templated from the cluster ({{ cluster.metadata.name }} and its shard label);
#                  mttp: the Flux MTTP test's app, a ServiceAccount, Service, Deployment (replicas
#                  0) and Ingress named pI-aJ, labelled bench=mttp, never templated (default configmap)
#   --namespace    namespace of every object; the profile <prefix>-ns creates it (default bench)
#   --plain        no templates (the configmap shape's data is then the literal profile name)
#   --sync-mode    syncMode of profiles p1..pP (default: none written, i.e. Continuous)
#   --git          `git init` DIR and commit everything on branch main
#
# Each profile's objects are files manifests/<prefix>I/<name>.yaml (one object per file for configmap,
# the app's four objects per file for mttp), referenced with one policyRef to the directory.
set -euo pipefail

out="" clusters=3 profiles=20 objects=10 shape=configmap namespace=bench plain=0 sync_mode="" git=0
prefix=p
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --clusters) clusters=$2; shift 2 ;;
    --profiles) profiles=$2; shift 2 ;;
    --objects) objects=$2; shift 2 ;;
    --shape) shape=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    --plain) plain=1; shift ;;
    --sync-mode) sync_mode=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --git) git=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "gen-fleet: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "gen-fleet: --out DIR is required" >&2; exit 2; }
for n in "$clusters" "$profiles" "$objects"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "gen-fleet: not a count: $n" >&2; exit 2; }
done
case $shape in configmap | mttp) ;; *) echo "gen-fleet: unknown shape $shape" >&2; exit 2 ;; esac

mkdir -p "$out/clusters" "$out/profiles" "$out/manifests"
for ((c = 1; c <= clusters; c++)); do
  printf -- '---\napiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c%s\n  labels: {env: bench, shard: s%s}\n' \
    "$c" "$((c % 10))"
done > "$out/clusters/fleet.yaml"

printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$namespace" > "$out/manifests/namespace.yaml"
printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: %s-ns\nspec:\n  clusterSelector: {matchLabels: {env: bench}}\n  policyRefs:\n  - {path: manifests/namespace.yaml}\n' \
  "$prefix" > "$out/profiles/$prefix-ns.yaml"

configmap() { # PROFILE OBJECT
  if [ $plain -eq 1 ]; then
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s%s-o%s\n  namespace: %s\ndata:\n  profile: "%s%s"\n  value: "v1"\n' \
      "$prefix" "$1" "$2" "$namespace" "$prefix" "$1"
  else
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s%s-o%s\n  namespace: %s\ndata:\n  cluster: "{{ cluster.metadata.name }}"\n  shard: "{{ cluster.metadata.labels.shard }}"\n  value: "v1"\n' \
      "$prefix" "$1" "$2" "$namespace"
  fi
}

mttp_app() { # PROFILE APP
  local name=$prefix$1-a$2
  cat <<YAML
apiVersion: v1
kind: ServiceAccount
metadata:
  name: $name
  namespace: $namespace
  labels: {bench: mttp, app: $name}
---
apiVersion: v1
kind: Service
metadata:
  name: $name
  namespace: $namespace
  labels: {bench: mttp, app: $name}
spec:
  selector: {app: $name}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $name
  namespace: $namespace
  labels: {bench: mttp, app: $name}
spec:
  replicas: 0
  selector:
    matchLabels: {app: $name}
  template:
    metadata:
      labels: {app: $name}
    spec:
      serviceAccountName: $name
      containers:
      - name: app
        image: registry.invalid/flotilla-bench/app:0.1.0
        ports:
        - {containerPort: 8080}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: $name
  namespace: $namespace
  labels: {bench: mttp, app: $name}
spec:
  rules:
  - host: $name.mttp.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: $name
            port: {number: 80}
YAML
}

templated=true
{ [ $plain -eq 1 ] || [ "$shape" = mttp ]; } && templated=false
for ((p = 1; p <= profiles; p++)); do
  mkdir -p "$out/manifests/$prefix$p"
  for ((o = 1; o <= objects; o++)); do
    if [ "$shape" = configmap ]; then
      configmap "$p" "$o" > "$out/manifests/$prefix$p/o$o.yaml"
    else
      mttp_app "$p" "$o" > "$out/manifests/$prefix$p/a$o.yaml"
    fi
  done
  {
    printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: %s%s\nspec:\n  clusterSelector: {matchLabels: {env: bench}}\n' "$prefix" "$p"
    [ -z "$sync_mode" ] || printf '  syncMode: %s\n' "$sync_mode"
    printf '  dependsOn: [%s-ns]\n  policyRefs:\n  - {path: manifests/%s%s, template: %s}\n' "$prefix" "$prefix" "$p" "$templated"
  } > "$out/profiles/$prefix$p.yaml"
done

if [ $git -eq 1 ]; then
  git init -q -b main "$out"
  git -C "$out" add -A
  git -C "$out" -c user.name=bench -c user.email=bench@example.com commit -q -m \
    "synthetic fleet: $clusters clusters × $profiles profiles × $objects $shape objects"
fi
