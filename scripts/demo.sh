#!/usr/bin/env bash
# The main job, end to end on local control planes: build what is needed, start three local
# clusters (prod-eu-1 and mgmt on Kubernetes 1.37, staging-eu-1 on 1.34; prod-us-1 is paused in
# the inventory), turn example-repo into a bare git repository, and let flotilla sync it:
# the note it writes on the commit, `flotilla status`, and the objects in the clusters. Then one
# change to a profile is committed and synced, and that note is shown too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/testbin.sh
cargo build --locked --quiet
flotilla=$root/target/debug/flotilla
kubectl=${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}/kubectl

dir=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-demo.XXXXXX")
trap 'scripts/local-clusters.sh down --dir "$dir/fleet" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

echo "== starting three local control planes (one etcd, three kube-apiservers)"
scripts/local-clusters.sh up --dir "$dir/fleet" --owner-pid $$ \
  --names prod-eu-1,staging-eu-1,mgmt --version 1.37,1.34,1.37

echo
echo "== example-repo as a bare git repository"
git init -q --bare -b main "$dir/config.git"
cp -r example-repo "$dir/work"
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
    --management-cluster mgmt --cache-dir "$dir/cache" >/dev/null || rc=$?
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
  echo
  echo "== kubectl get (objects labelled app.kubernetes.io/managed-by=flotilla) on $cluster"
  kinds=namespaces,serviceaccounts,configmaps,secrets,resourcequotas,deployments,customresourcedefinitions
  if [ "$cluster" = mgmt ]; then kinds=$kinds,buckets.storage.example.dev; fi
  "$kubectl" --kubeconfig "$dir/fleet/$cluster.kubeconfig" get "$kinds" \
    -A -l app.kubernetes.io/managed-by=flotilla \
    -o custom-columns='KIND:.kind,NAMESPACE:.metadata.namespace,NAME:.metadata.name,PROFILE:.metadata.annotations.flotilla\.dev/profile'
done

echo
echo "== one change to a profile: guardrails now also selects env=staging"
sed -i 's/values: \[prod\]/values: [prod, staging]/' "$dir/work/profiles/guardrails.yaml"
git -C "$dir/work" diff --stat
git -C "$dir/work" -c user.name=demo -c user.email=demo@example.com commit -q -a -m "guardrails on staging too"
git -C "$dir/work" push -q "$dir/config.git" main

sync
