#!/usr/bin/env bash
# The main job, end to end on local control planes: build what is needed, start three local
# clusters (prod-eu-1 and mgmt on Kubernetes 1.37, staging-eu-1 on 1.34; prod-us-1 is paused in
# the inventory), publish example-repo's two charts on loopback (charts/greeter in an http chart
# repository, charts/tenant-quota in an OCI registry: no internet needed), turn example-repo into
# a bare git repository, and let flotilla sync it: the note it writes on the commit,
# `flotilla status`, the objects in the clusters and the Helm releases (`helm list -A`). Then one
# change to a profile (a Helm values change) is committed and synced, and that note is shown too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/testbin.sh
cargo build --locked --quiet
flotilla=$root/target/debug/flotilla
testbin=${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}
kubectl=$testbin/kubectl

dir=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-demo.XXXXXX")
servers=()
cleanup() {
  local pid
  for pid in "${servers[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  scripts/local-clusters.sh down --dir "$dir/fleet" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The pinned helm with its own homes in the demo's directory (nothing from ~/.config/helm).
helm() {
  HELM_CACHE_HOME="$dir/helm/cache" HELM_CONFIG_HOME="$dir/helm/config" \
    HELM_DATA_HOME="$dir/helm/data" "$testbin/helm" "$@"
}

# port PREFERRED: PREFERRED when it is free on 127.0.0.1, else some free port.
port() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

# wait_for URL PID NAME: until URL answers (at most 20 s), or fail if PID exited.
wait_for() {
  for _ in $(seq 200); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited; its log:" >&2; cat "$dir/$3.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$3 did not answer $1 within 20 s; its log:" >&2
  cat "$dir/$3.log" >&2
  return 1
}

echo "== starting three local control planes (one etcd, three kube-apiservers)"
scripts/local-clusters.sh up --dir "$dir/fleet" --owner-pid $$ \
  --names prod-eu-1,staging-eu-1,mgmt --version 1.37,1.34,1.37

echo
echo "== example-repo's charts on loopback: an http chart repository and an OCI registry"
# The URLs written in example-repo's profiles; other ports (rewritten in the demo's copy) when
# these are taken.
http_port=$(port 18879)
oci_port=$(port 15000)
mkdir -p "$dir/chart-repo" "$dir/oci-charts" "$dir/registry"
# package DIR CHART: `helm package` CHART into DIR; prints the archive's path.
package() { helm package -d "$1" "$2" | sed -n 's/^Successfully packaged chart and saved it to: //p'; }
greeter=$(package "$dir/chart-repo" example-repo/charts/greeter)
helm repo index "$dir/chart-repo" --url "http://127.0.0.1:$http_port"
python3 -m http.server --bind 127.0.0.1 --directory "$dir/chart-repo" "$http_port" \
  >"$dir/chart-repo.log" 2>&1 &
servers+=($!)
wait_for "http://127.0.0.1:$http_port/index.yaml" "$!" chart-repo
echo "http://127.0.0.1:$http_port (python3 -m http.server): index.yaml, ${greeter##*/}"

cat >"$dir/registry/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text}
storage:
  filesystem: {rootdirectory: $dir/registry/storage}
http:
  addr: 127.0.0.1:$oci_port
  secret: flotilla-demo
YAML
OTEL_SDK_DISABLED=true OTEL_TRACES_EXPORTER=none \
  "$testbin/registry" serve "$dir/registry/config.yml" >"$dir/registry.log" 2>&1 &
servers+=($!)
wait_for "http://127.0.0.1:$oci_port/v2/" "$!" registry
tenant_quota=$(package "$dir/oci-charts" example-repo/charts/tenant-quota)
pushed=$(helm push "$tenant_quota" "oci://127.0.0.1:$oci_port/charts" --plain-http 2>&1) ||
  { echo "$pushed" >&2; exit 1; }
echo "oci://127.0.0.1:$oci_port (distribution registry): $(echo "$pushed" | sed -n 's/^Pushed: //p')"

echo
echo "== example-repo as a bare git repository"
git init -q --bare -b main "$dir/config.git"
cp -r example-repo "$dir/work"
if [ "$http_port" != 18879 ] || [ "$oci_port" != 15000 ]; then
  echo "(ports 18879/15000 taken: the demo's copy uses $http_port/$oci_port)"
  sed -i -e "s#http://127.0.0.1:18879#http://127.0.0.1:$http_port#" \
    -e "s#oci://127.0.0.1:15000/#oci://127.0.0.1:$oci_port/#" "$dir"/work/profiles/*.yaml
fi
git -C "$dir/work" init -q -b main
git -C "$dir/work" add -A
git -C "$dir/work" -c user.name=demo -c user.email=demo@example.com commit -q -m "example fleet"
git -C "$dir/work" push -q "$dir/config.git" main
echo "file://$dir/config.git @ $(git -C "$dir/work" rev-parse --short HEAD)"

sync() {
  echo
  echo "== flotilla sync --once --repo file://$dir/config.git --kubeconfig-dir <fleet> --management-cluster mgmt"
  local start=$SECONDS rc=0
  "$flotilla" sync --once --repo "file://$dir/config.git" --kubeconfig-dir "$dir/fleet" \
    --management-cluster mgmt --cache-dir "$dir/cache" \
    --helm-bin "$testbin/helm" --chart-cache-dir "$dir/chart-cache" >/dev/null || rc=$?
  echo "(exit $rc after $((SECONDS - start))s; 1 means some cluster or profile is not fully in sync: see the note)"
  echo
  echo "== git log --notes=flotilla -1 (the note flotilla pushed on the synced commit)"
  git --git-dir "$dir/config.git" log --notes=flotilla -1 | sed -E 's/^/    /' | cut -c1-140
}

sync

echo
echo "== flotilla status --repo file://$dir/config.git"
"$flotilla" status --repo "file://$dir/config.git" --cache-dir "$dir/cache"

for cluster in prod-eu-1 staging-eu-1 mgmt; do
  kubeconfig=$dir/fleet/$cluster.kubeconfig
  echo
  echo "== kubectl get (objects labelled app.kubernetes.io/managed-by=flotilla) on $cluster"
  kinds=namespaces,serviceaccounts,configmaps,secrets,resourcequotas,deployments,customresourcedefinitions
  if [ "$cluster" = mgmt ]; then kinds=$kinds,buckets.storage.example.dev; fi
  "$kubectl" --kubeconfig "$kubeconfig" get "$kinds" \
    -A -l app.kubernetes.io/managed-by=flotilla \
    -o custom-columns='KIND:.kind,NAMESPACE:.metadata.namespace,NAME:.metadata.name,PROFILE:.metadata.annotations.flotilla\.dev/profile'
  echo
  echo "== helm list -A on $cluster (the Helm releases; their values are templated per cluster)"
  KUBECONFIG=$kubeconfig helm list -A
  echo "greeter ConfigMap: $("$kubectl" --kubeconfig "$kubeconfig" -n greeter get configmap greeter \
    -o jsonpath='greeting="{.data.greeting}" environment={.data.environment} region={.data.region}')"
done

echo
echo "== one change to a profile: team-quotas doubles staging's budget (a Helm values change)"
sed -i 's/quota: {cpu: "4", memory: 8Gi, pods: 20}/quota: {cpu: "8", memory: 16Gi, pods: 40}/' \
  "$dir/work/profiles/team-quotas.yaml"
git -C "$dir/work" diff --stat
git -C "$dir/work" -c user.name=demo -c user.email=demo@example.com commit -q -a -m "team-quotas: double staging's budget"
echo
echo "== flotilla plan --base HEAD~1 --head HEAD (what a reviewer sees before the merge; abridged)"
# The daemon's state notes give the plan each cluster's labels as the last sync saw them.
git -C "$dir/work" fetch -q "$dir/config.git" 'refs/notes/*:refs/notes/*'
plan_rc=0
"$flotilla" plan --repo "$dir/work" --base HEAD~1 --head HEAD --output "$dir/plan.md" || plan_rc=$?
echo "(exit $plan_rc: 1 means something would change)"
sed -n '1,/^<\/details>/p' "$dir/plan.md" | sed -E 's/^/    /' | cut -c1-140
git -C "$dir/work" push -q "$dir/config.git" main

sync

echo
echo "== helm list -n team-a on staging-eu-1 (revision 2)"
KUBECONFIG=$dir/fleet/staging-eu-1.kubeconfig helm list -n team-a

echo
echo "== flotilla run (the daemon) and a hand edit on prod-eu-1: guardrails uses ContinuousWithDriftDetection"
FLOTILLA_LOG=info "$flotilla" run --http-addr off --repo "file://$dir/config.git" --kubeconfig-dir "$dir/fleet" \
  --management-cluster mgmt --cache-dir "$dir/cache" --interval 60s \
  --helm-bin "$testbin/helm" --chart-cache-dir "$dir/chart-cache" 2>"$dir/daemon.log" &
servers+=($!)
for _ in $(seq 1 300); do grep -q 'drift watches' "$dir/daemon.log" && break; sleep 0.1; done
sleep 1
prod=$dir/fleet/prod-eu-1.kubeconfig
echo "\$ kubectl -n platform patch resourcequota platform-quota -p '{\"spec\":{\"hard\":{\"pods\":\"5\"}}}'"
"$kubectl" --kubeconfig "$prod" -n platform patch resourcequota platform-quota --type merge \
  -p '{"spec":{"hard":{"pods":"5"}}}' --field-manager kubectl-edit >/dev/null
echo "\$ kubectl -n platform scale deployment echo --replicas 3   (excluded: /spec/replicas)"
"$kubectl" --kubeconfig "$prod" -n platform scale deployment echo --replicas 3 >/dev/null
for _ in $(seq 1 100); do
  git --git-dir "$dir/config.git" notes --ref flotilla show HEAD 2>/dev/null | grep -q '^## drift' && break
  sleep 0.1
done
echo "pods quota now: $("$kubectl" --kubeconfig "$prod" -n platform get resourcequota platform-quota -o jsonpath='{.spec.hard.pods}')" \
  "(repaired), echo replicas: $("$kubectl" --kubeconfig "$prod" -n platform get deployment echo -o jsonpath='{.spec.replicas}') (left alone)"
echo
echo "== the drift section of the note on the applied commit"
git --git-dir "$dir/config.git" notes --ref flotilla show HEAD | sed -n '/^## drift/,$p' | sed -E 's/^/    /' | cut -c1-200

echo
echo "== the two-stage pattern: storage-config on prod-eu-1 is pending until its Bucket claim in mgmt has a status"
mgmt=$dir/fleet/mgmt.kubeconfig
echo "\$ kubectl (mgmt) -n default patch bucket user-storage-prod-eu-1 --subresource status -p '{\"status\":{\"endpoint\":\"https://buckets.example/prod-eu-1\"}}'"
"$kubectl" --kubeconfig "$mgmt" -n default patch bucket user-storage-prod-eu-1 --subresource status \
  --type merge -p '{"status":{"endpoint":"https://buckets.example/prod-eu-1"}}' >/dev/null
endpoint=""
for _ in $(seq 1 100); do
  endpoint=$("$kubectl" --kubeconfig "$prod" -n platform get configmap user-storage \
    -o jsonpath='{.data.endpoint}' 2>/dev/null || true)
  [ -n "$endpoint" ] && break
  sleep 0.1
done
echo "prod-eu-1 ConfigMap platform/user-storage: endpoint=${endpoint:-<not rendered>} (the daemon's watch on the claim re-rendered it, no commit)"
