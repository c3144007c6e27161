#!/usr/bin/env bash
# The main job, end to end on local control planes: build the test binaries if needed, start the
# example fleet (four clusters on two Kubernetes versions), validate example-repo and render what
# each cluster gets with its live version (so the version classifier decides which clusters get
# the `new-apis` profile), then stop the control planes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbin.sh
cargo build --locked --quiet
flotilla=target/debug/flotilla

dir=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-demo.XXXXXX")
trap 'scripts/local-clusters.sh down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

echo "== starting the example fleet (one etcd, four kube-apiservers)"
scripts/local-clusters.sh up --dir "$dir" --owner-pid $$ \
  --names prod-eu-1,prod-us-1,staging-eu-1,mgmt --version 1.37,1.34,1.34,1.37

echo
echo "== flotilla validate --path example-repo"
"$flotilla" validate --path example-repo

for cluster in prod-eu-1 prod-us-1 staging-eu-1 mgmt; do
  echo
  echo "== flotilla render --path example-repo --cluster $cluster --kubeconfig-dir <fleet>"
  "$flotilla" render --path example-repo --cluster "$cluster" --kubeconfig-dir "$dir" \
    | grep -E '^# (flotilla render|profile)' | sed -E 's/  source: .*//' | sort -u
done

echo
echo "== what the version classifier did: new-apis only on the v1.37 clusters"
for cluster in prod-eu-1 prod-us-1 staging-eu-1 mgmt; do
  if "$flotilla" render --path example-repo --cluster "$cluster" --kubeconfig-dir "$dir" \
      --profile new-apis 2>/dev/null | grep -q 'kind: ConfigMap'; then
    echo "$cluster: new-apis rendered"
  else
    echo "$cluster: new-apis not selected"
  fi
done
