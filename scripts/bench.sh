#!/usr/bin/env bash
# Benchmarks of the sync engine against real local control planes (the launcher), with a
# release build. Prints a table and appends it, with date, machine, versions and the command,
# to docs/benchmarks.md. Nothing here asserts a time: the figures are recorded, not tested.
#
#   scripts/bench.sh [--quick] [--runs N] [WORKLOAD...]
#
# Synthetic config repositories come from scripts/gen-fleet.sh. Every no-op row also gives the
# CPU time (user + system) of the flotilla process.
#
# Workloads (default: all):
#   render   `flotilla plan` (no cluster access) from a commit with only the inventory of 1000
#            clusters to one with 20 templated profiles × 10 ConfigMaps and their Namespace
#            profile: every (cluster, profile) pair rendered and planned, 201,000 objects added;
#            markdown (the PR comment) and JSON (every diff); wall time, CPU time, peak RSS
#            (target ≤ 1 s, ≤ 200 MiB)
#   sync     one commit, 3 clusters, 20 profiles × 10 ConfigMaps: `flotilla sync --once` wall
#            time from start to notes pushed, peak RSS; then the no-op pass: the next
#            `sync --once` with no new commit: write requests (from the apiservers' audit logs;
#            must be 0), requests in total, wall time, and whether the poll fetched (must not)
#   latency  `flotilla run` on a local repository: `git commit` → object applied on all 3
#            clusters (last write's completion in the audit logs minus the commit time)
#   helm     one commit, 1 cluster, 1 profile with N helmCharts entries (releases r1..rN of one
#            small chart from a loopback http chart repository), N = 10, 50, 100: `sync --once`
#            wall time until all N releases are deployed (fresh chart cache, so the chart
#            download is included), flotilla's own peak RSS, helm processes started; then the
#            no-op pass: wall time, helm processes started (must be 0), chart repository
#            requests, write requests (must be 0) and requests in total. N = 100 runs at most
#            3 times (each run installs and then uninstalls 100 releases, one helm at a time).
#   drift    `flotilla run` (local repository, --interval 60s) with 3 clusters × 500 ConfigMaps in
#            10 ContinuousWithDriftDetection profiles: 20 edits of a field flotilla owns (kubectl
#            patch as another field manager, round robin over the clusters), repair latency from
#            the apiservers' audit logs (edit completed → flotilla's re-apply completed), median
#            and max; the daemon's RSS with every watch running; its CPU over 30 s of nothing
#            changing (utime+stime from /proc)
#   plan     `flotilla plan` (render mode, no clusters) of a generated repository of 1000 clusters
#            × 20 templated profiles × 10 ConfigMaps, head = one template value of one profile
#            changed (1000 clusters × 1 object changed): wall time and peak RSS of the markdown
#            plan (target ≤ 2 s, ≤ 300 MiB); then the worst case, every cluster relabelled (every
#            profile rendered on both sides, every object changed; at most 3 runs); the same
#            size in --quick
#   mttp     the Flux MTTP test's shape: 1 cluster, 1 profile, N apps (ServiceAccount, Service,
#            Deployment with replicas 0, Ingress; plain files, manifests/mttp/appI.yaml) plus their
#            Namespace, N = 100, 500, 1000: `sync --once` wall time from start to notes pushed and
#            peak RSS, all 4N objects counted afterwards; the no-op pass (writes, must be 0, and
#            requests); and, in the same run against the same apiserver, kubectl's baseline with
#            the identical objects in another namespace: one `kubectl apply --server-side` of the
#            directory, and one invocation per app (the whole loop; for N ≥ 500 in the first
#            run only: ~0.2 s per kubectl process). Every run uses fresh
#            namespaces (a bare apiserver has no namespace controller: deleted ones never go)
#            and its own profile name, so no run prunes an earlier run's objects.
#   fleet    10 apiservers (one etcd), one profile of 50 templated ConfigMaps (+ Namespace):
#            `sync --once` wall time; kubectl's baseline in the same run: the identical rendered
#            objects (`flotilla render` per cluster, not timed) in another namespace, one
#            `kubectl apply --server-side` per cluster, cluster by cluster; the no-op pass
# --quick: 1 run each, 2 profiles, helm with N = 10 only, drift with 3 × 50 objects and 5 edits,
# mttp with N = 100 only (render, plan and fleet at their only size)
# (a smoke test; CI may run it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

args="$*"
quick=0 runs=5 workloads=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; runs=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    render | sync | latency | helm | drift | plan | mttp | fleet) workloads+=("$1"); shift ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#workloads[@]} -gt 0 ] || workloads=(render sync latency helm drift plan mttp fleet)
profiles=20 releases=(10 50 100) apps=(100 500 1000)
[ $quick -eq 1 ] && profiles=2 releases=(10) apps=(100)
# sync and latency need 3 clusters; helm and mttp need one (c1), so `bench.sh helm` starts only
# that; plan needs none.
clusters=()
case " ${workloads[*]} " in *" helm "* | *" mttp "*) clusters=(c1) ;; esac
case " ${workloads[*]} " in *" sync "* | *" latency "* | *" drift "*) clusters=(c1 c2 c3) ;; esac
case " ${workloads[*]} " in *" fleet "*) clusters=(c1 c2 c3 c4 c5 c6 c7 c8 c9 c10) ;; esac

# Other work on the machine competes for the same cores: its load average goes into the heading.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# The commit the binary is built from (HEAD may move while a long run goes on).
built_from=$(git rev-parse --short HEAD)
scripts/testbin.sh >/dev/null
cargo build --release --locked --quiet
work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-bench.XXXXXX")
# A private copy: another build sharing the target directory must not swap the binary mid-run.
cp "${CARGO_TARGET_DIR:-$root/target}/release/flotilla" "$work/flotilla"
flotilla=$work/flotilla

daemon_pid="" http_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
  [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null || true
  scripts/local-clusters.sh down --dir "$work/fleet" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ ${#clusters[@]} -gt 0 ]; then
  scripts/local-clusters.sh up --dir "$work/fleet" --owner-pid $$ \
    --names "$(IFS=,; echo "${clusters[*]}")" >/dev/null
fi

# A config repo (scripts/gen-fleet.sh): 3 clusters, $profiles profiles p1..pP of 10 ConfigMaps
# each (templated with the cluster's name and shard label), and p-ns, the Namespace they depend on.
make_repo() {
  scripts/gen-fleet.sh --out "$1" --clusters 3 --profiles "$profiles" --objects 10 --namespace "$2"
}

# withdraw_all REPO SYNC_ARGS...: commits REPO without any profile (pushing it to its bare
# remote, if it has one) and runs `flotilla sync --once SYNC_ARGS...` (not timed): every
# workload leaves the clusters without its objects, so the next workload's timed pass does not
# withdraw them. Namespaces go as well; a bare apiserver has no namespace controller, so a
# deleted namespace stays Terminating: every workload and run uses namespaces of its own.
withdraw_all() {
  local repo=$1; shift
  git -C "$repo" rm -q -r --ignore-unmatch profiles
  commit "$repo" "withdraw everything"
  if git -C "$repo" remote | grep -q .; then git -C "$repo" push -q origin main; fi
  "$flotilla" sync --once "$@" >/dev/null 2>&1 || echo "bench: withdrawing $repo failed" >&2
}

commit() { git -C "$1" -c user.name=bench -c user.email=bench@example.com commit -q --allow-empty -a -m "$2"; }

# count_requests SINCE_LINES... → "writes total" over the clusters' audit logs after the given
# line counts (one per cluster, as audit_lines prints them)
audit_lines() { for c in "${clusters[@]}"; do wc -l < "$work/fleet/logs/$c.audit.log"; done | tr '\n' ' '; }
count_requests() {
  python3 - "$work/fleet/logs" "${clusters[*]}" "$@" <<'PY'
import json, sys
logs, names, since = sys.argv[1], sys.argv[2].split(), [int(x) for x in sys.argv[3:]]
writes = total = 0
for i, c in enumerate(names):
    with open(f"{logs}/{c}.audit.log") as f:
        for n, line in enumerate(f):
            if n < since[i]:
                continue
            e = json.loads(line)
            if e.get("user", {}).get("username") != "flotilla-admin":
                continue
            total += 1
            if e["verb"] in ("create", "update", "patch", "delete", "deletecollection") and "dryRun=" not in e["requestURI"]:
                writes += 1
print(writes, total)
PY
}

# measure CMD... → prints "wall_seconds max_rss_kib"; the command's CPU time (user + system
# seconds) goes to $work/cpu
measure() {
  /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || {
    cat "$work/stderr" >&2
    return 1
  }
  awk '{printf "%.2f\n", $3 + $4}' "$work/time" > "$work/cpu"
  cut -d' ' -f1-2 "$work/time"
}

# measure_own CMD... → prints "wall_seconds own_peak_rss_kib tree_peak_rss_kib". /usr/bin/time's
# %M is the larger of the process's peak RSS and that of the largest child it reaped, so with helm
# children it shows helm's; flotilla's own high-water mark (VmHWM) is read from /proc every 10 ms
# until it exits (the last reading before exit).
measure_own() {
  python3 - "$work/stderr" "$@" >"$work/time" <<'PY' || { cat "$work/stderr" >&2; return 1; }
import os, subprocess, sys, time
with open(sys.argv[1], "w") as err:
    t0 = time.monotonic()
    child = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    own = 0
    while True:
        try:
            with open(f"/proc/{child.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        own = max(own, int(line.split()[1]))
        except OSError:
            pass
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.01)
    wall = time.monotonic() - t0
with open(sys.argv[1] + ".cpu", "w") as cpu:
    cpu.write(f"{usage.ru_utime + usage.ru_stime:.2f}\n")
print(f"{wall:.2f} {own} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
PY
  mv "$work/stderr.cpu" "$work/cpu"
  cat "$work/time"
}

# The helm workload: a chart repository on loopback (python's http.server, started once), the
# pinned helm with private homes (never ~/.config/helm), and a --helm-bin wrapper that appends
# each helm invocation to $work/helm-calls.log.
helm=${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}/helm
chart_url=""
run_helm() {
  HELM_CACHE_HOME="$work/helm-home/cache" HELM_CONFIG_HOME="$work/helm-home/config" \
    HELM_DATA_HOME="$work/helm-home/data" KUBECONFIG="$work/fleet/c1.kubeconfig" "$helm" "$@"
}
helm_setup() {
  [ -z "$http_pid" ] || return 0
  local chart=$work/chart/bench served=$work/served port="" w
  mkdir -p "$chart/templates" "$served" "$work/helm-wrapper"
  printf 'apiVersion: v2\nname: bench\ndescription: flotilla benchmark chart\ntype: application\nversion: 0.1.0\nappVersion: "0.1.0"\n' \
    > "$chart/Chart.yaml"
  printf 'greeting: hello\nreplicas: 0\n' > "$chart/values.yaml"
  cat > "$chart/templates/configmap.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
data:
  greeting: {{ .Values.greeting | quote }}
  chartVersion: {{ .Chart.Version | quote }}
YAML
  # No nodes and no controllers here: the Deployment is accepted and never rolls out (flotilla
  # never passes --wait).
  cat > "$chart/templates/deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ .Release.Name }}
    spec:
      containers:
      - name: app
        image: registry.invalid/flotilla-bench/app:0.1.0
YAML
  run_helm package "$chart" --destination "$served" >/dev/null
  # Port 0: the server picks a free port and prints it; the index is written once it is known.
  python3 -u -m http.server --bind 127.0.0.1 --directory "$served" 0 >"$work/http.out" 2>"$work/http.log" &
  http_pid=$!
  for ((w = 0; w < 100; w++)); do
    port=$(sed -n 's/^Serving HTTP on .* port \([0-9][0-9]*\) .*/\1/p' "$work/http.out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "bench: the chart repository did not start" >&2; exit 1; }
  chart_url=http://127.0.0.1:$port
  run_helm repo index "$served" --url "$chart_url"
  # shellcheck disable=SC2016 # $* is for the wrapper to expand
  printf '#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' "$work/helm-calls.log" "$helm" > "$work/helm-wrapper/helm"
  chmod +x "$work/helm-wrapper/helm"
}

# make_helm_repo DIR N: cluster c1 and one profile with N releases r1..rN of the bench chart in
# namespace helm-bench, values templated with the cluster's name.
make_helm_repo() {
  local repo=$1 n=$2 i
  mkdir -p "$repo/clusters" "$repo/profiles"
  printf 'apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels: {env: bench}\n' \
    > "$repo/clusters/fleet.yaml"
  {
    printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: helm-bench\nspec:\n  clusterSelector: {matchLabels: {env: bench}}\n  helmCharts:\n'
    for ((i = 1; i <= n; i++)); do
      printf '  - repositoryURL: %s\n    repositoryName: bench\n    chartName: bench/bench\n    chartVersion: 0.1.0\n    releaseName: r%s\n    releaseNamespace: helm-bench\n    helmChartAction: Install\n    values: |\n      greeting: "{{ cluster.metadata.name }}-r%s"\n' \
        "$chart_url" "$i" "$i"
    done
  } > "$repo/profiles/helm.yaml"
}

# helm_deployed N [any] → how many of r1..rN `helm list -A` shows in helm-bench as deployed
# bench-0.1.0 (with `any`: in any status)
helm_deployed() {
  run_helm list --all-namespaces --max 0 --output json | python3 -c '
import json, sys
n, anystatus = int(sys.argv[1]), sys.argv[2] == "any"
names = {f"r{i}" for i in range(1, n + 1)}
print(sum(1 for r in json.load(sys.stdin)
          if r["namespace"] == "helm-bench" and r["name"] in names
          and (anystatus or (r["status"] == "deployed" and r["chart"] == "bench-0.1.0"))))
' "$1" "${2:-}"
}

max() { printf '%s\n' "$@" | sort -n | tail -n 1; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
spread() { sort -g | awk 'NR==1{min=$1} {max=$1} END {printf "%s–%s", min, max}'; }

# The drift workload's repo: 3 clusters, 10 ContinuousWithDriftDetection profiles p1..p10 of
# $2 / 10 plain ConfigMaps each (pI-oJ, data.value "v1") in namespace drift, and p-ns.
make_drift_repo() {
  scripts/gen-fleet.sh --out "$1" --clusters 3 --profiles 10 --objects $(($2 / 10)) --plain \
    --sync-mode ContinuousWithDriftDetection --namespace drift
}

# mttp_manifests DIR NAMESPACE N: the Namespace (DIR/00-namespace.yaml, first in file order for
# kubectl) and N apps, DIR/appI.yaml each a ServiceAccount, a Service, a Deployment with
# replicas 0 and an Ingress, labelled bench=mttp (what mttp_count counts).
mttp_manifests() {
  local dir=$1 ns=$2 n=$3 i
  mkdir -p "$dir"
  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns" > "$dir/00-namespace.yaml"
  for ((i = 1; i <= n; i++)); do
    cat > "$dir/app$i.yaml" <<YAML
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app$i
  namespace: $ns
  labels: {bench: mttp, app: app$i}
---
apiVersion: v1
kind: Service
metadata:
  name: app$i
  namespace: $ns
  labels: {bench: mttp, app: app$i}
spec:
  selector: {app: app$i}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app$i
  namespace: $ns
  labels: {bench: mttp, app: app$i}
spec:
  replicas: 0
  selector:
    matchLabels: {app: app$i}
  template:
    metadata:
      labels: {app: app$i}
    spec:
      serviceAccountName: app$i
      containers:
      - name: app
        image: registry.invalid/flotilla-bench/app:0.1.0
        ports:
        - {containerPort: 8080}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app$i
  namespace: $ns
  labels: {bench: mttp, app: app$i}
spec:
  rules:
  - host: app$i.mttp.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: app$i
            port: {number: 80}
YAML
  done
}

# make_mttp_repo DIR NAMESPACE N: cluster c1 and one profile with the Namespace and the N apps,
# named after the namespace: each run has its own inventory (flotilla-inventory-<profile>), so a
# run never prunes the previous run's objects inside its timed pass.
make_mttp_repo() {
  local repo=$1
  mkdir -p "$repo/clusters" "$repo/profiles"
  printf 'apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels: {env: bench}\n' \
    > "$repo/clusters/fleet.yaml"
  mttp_manifests "$repo/manifests/mttp" "$2" "$3"
  printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: %s\nspec:\n  clusterSelector: {matchLabels: {env: bench}}\n  policyRefs:\n  - {path: manifests/mttp}\n' \
    "$2" > "$repo/profiles/mttp.yaml"
}

# mttp_count NAMESPACE → how many ServiceAccounts, Services, Deployments and Ingresses labelled
# bench=mttp the namespace holds on c1
mttp_count() {
  "$kubectl" --kubeconfig "$work/fleet/c1.kubeconfig" get sa,svc,deploy,ingress -n "$1" \
    -l bench=mttp --no-headers 2>/dev/null | wc -l
}

kubectl=${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}/kubectl

# cpu_ticks PID → utime + stime of the process, in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

rows=()
row() { rows+=("$(printf '| %-8s | %-58s | %-22s | %-14s |' "$1" "$2" "$3" "$4")"); }

sync_args=(--kubeconfig-dir "$work/fleet")

for workload in "${workloads[@]}"; do
  case $workload in
    sync)
      walls=() rsss=() noop_walls=() noop_writes=() noop_totals=() noop_fetched=() noop_cpus=()
      for ((r = 1; r <= runs; r++)); do
        rm -rf "$work/repo$r" "$work/bare$r.git" "$work/cache$r"
        make_repo "$work/repo$r" "sync$r"
        git init -q -b main "$work/repo$r"
        git -C "$work/repo$r" add -A
        commit "$work/repo$r" "bench run $r"
        git init -q --bare -b main "$work/bare$r.git"
        git -C "$work/repo$r" remote add origin "$work/bare$r.git"
        git -C "$work/repo$r" push -q origin main
        read -r wall rss <<<"$(measure "$flotilla" sync --once --repo "file://$work/bare$r.git" \
          "${sync_args[@]}" --cache-dir "$work/cache$r" --notes-ref "refs/notes/bench$r")"
        walls+=("$wall") rsss+=("$rss")
        read -ra since <<<"$(audit_lines)"
        read -r wall rss <<<"$(FLOTILLA_LOG=flotilla=debug measure "$flotilla" sync --once \
          --repo "file://$work/bare$r.git" "${sync_args[@]}" --cache-dir "$work/cache$r" \
          --notes-ref "refs/notes/bench$r")"
        read -r writes total <<<"$(count_requests "${since[@]}")"
        noop_walls+=("$wall") noop_writes+=("$writes") noop_totals+=("$total") noop_cpus+=("$(cat "$work/cpu")")
        # The git adapter logs "fetched a new commit" only when a poll fetched.
        noop_fetched+=("$(grep -c 'fetched a new commit' "$work/stderr" || true)")
        withdraw_all "$work/repo$r" --repo "file://$work/bare$r.git" "${sync_args[@]}" \
          --cache-dir "$work/cache$r" --notes-ref "refs/notes/bench$r"
      done
      objects=$((3 * (profiles * 10 + 1)))
      row sync "commit → notes pushed, 3 clusters × $profiles profiles × 10 objects ($objects objects)" \
        "$(printf '%s\n' "${walls[@]}" | median) s ($(printf '%s\n' "${walls[@]}" | spread))" \
        "$(( $(printf '%s\n' "${rsss[@]}" | sort -n | tail -n 1) / 1024 )) MiB peak RSS"
      row noop "second sync --once, no new commit ($objects objects in sync)" \
          "$(printf '%s\n' "${noop_walls[@]}" | median) s ($(printf '%s\n' "${noop_walls[@]}" | spread))" \
          "writes $(printf '%s\n' "${noop_writes[@]}" | sort -n | tail -n 1), requests $(printf '%s\n' "${noop_totals[@]}" | median), git fetches $(printf '%s\n' "${noop_fetched[@]}" | sort -n | tail -n 1), CPU $(printf '%s\n' "${noop_cpus[@]}" | median) s"
      ;;
    latency)
      lats=()
      rm -rf "$work/local"
      make_repo "$work/local" latency
      rm -f "$work/local/profiles/"p[0-9]*.yaml
      git init -q -b main "$work/local"
      git -C "$work/local" add -A
      commit "$work/local" "namespace only"
      "$flotilla" run --http-addr off --repo "$work/local" "${sync_args[@]}" --interval 60s \
        --cache-dir "$work/cache-latency" --notes-ref refs/notes/latency 2>"$work/daemon.log" &
      daemon_pid=$!
      sleep 3
      for ((r = 1; r <= runs; r++)); do
        printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: latency-%s\n  namespace: latency\ndata:\n  run: "%s"\n' "$r" "$r" \
          > "$work/local/manifests/latency.yaml"
        printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: latency\nspec:\n  clusterSelector: {}\n  dependsOn: [p-ns]\n  policyRefs:\n  - {path: manifests/latency.yaml}\n' \
          > "$work/local/profiles/latency.yaml"
        git -C "$work/local" add -A
        t0=$(date +%s.%N)
        commit "$work/local" "latency $r"
        lat=""
        for ((w = 0; w < 200; w++)); do
          lat=$(python3 - "$work/fleet/logs" "latency-$r" "$t0" <<'PY'
import json, sys, datetime
logs, name, t0 = sys.argv[1], sys.argv[2], float(sys.argv[3])
done = []
for c in ["c1", "c2", "c3"]:
    t = None
    with open(f"{logs}/{c}.audit.log") as f:
        for line in f:
            if f'"name":"{name}"' not in line:
                continue
            e = json.loads(line)
            if e["verb"] == "patch" and e.get("objectRef", {}).get("resource") == "configmaps":
                ts = e["stageTimestamp"].replace("Z", "+00:00")
                t = datetime.datetime.fromisoformat(ts).timestamp()
    if t is None:
        sys.exit(0)
    done.append(t)
print(f"{max(done) - t0:.3f}")
PY
)
          [ -n "$lat" ] && break
          sleep 0.05
        done
        [ -n "$lat" ] || { echo "bench: latency run $r: not applied within 10 s" >&2; exit 1; }
        lats+=("$lat")
        sleep 1
      done
      kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""
      withdraw_all "$work/local" --repo "$work/local" "${sync_args[@]}" --cache-dir "$work/cache-latency" \
        --notes-ref refs/notes/latency
      row latency "git commit in a local repo → applied on 3 clusters (run, watcher)" \
        "$(printf '%s\n' "${lats[@]}" | median) s ($(printf '%s\n' "${lats[@]}" | spread))" "target ≤ 2 s"
      ;;
    helm)
      helm_setup
      for n in "${releases[@]}"; do
        n_runs=$runs
        [ "$n" -ge 100 ] && [ "$n_runs" -gt 3 ] && n_runs=3
        walls=() owns=() trees=() calls=() noop_walls=() noop_calls=() noop_repo=() noop_writes=() noop_totals=() noop_cpus=()
        for ((r = 1; r <= n_runs; r++)); do
          id=h$n-$r
          rm -rf "$work/repo-$id" "$work/bare-$id.git" "$work/cache-$id" "$work/charts-$id"
          make_helm_repo "$work/repo-$id" "$n"
          git init -q -b main "$work/repo-$id"
          git -C "$work/repo-$id" add -A
          commit "$work/repo-$id" "helm bench $id"
          git init -q --bare -b main "$work/bare-$id.git"
          git -C "$work/repo-$id" push -q "$work/bare-$id.git" main
          helm_sync=("$flotilla" sync --once --repo "file://$work/bare-$id.git" "${sync_args[@]}"
            --cache-dir "$work/cache-$id" --chart-cache-dir "$work/charts-$id"
            --notes-ref "refs/notes/$id" --helm-bin "$work/helm-wrapper/helm")
          : > "$work/helm-calls.log"
          read -r wall own tree <<<"$(measure_own "${helm_sync[@]}")"
          walls+=("$wall") owns+=("$own") trees+=("$tree")
          calls+=("$(wc -l < "$work/helm-calls.log")")
          # e.g. "upgrade 10, pull 1" (the same in every run)
          call_kinds=$(awk '{print $1}' "$work/helm-calls.log" | sort | uniq -c | sort -rn |
            awk '{printf "%s%s %s", sep, $2, $1; sep = ", "}')
          deployed=$(helm_deployed "$n")
          [ "$deployed" -eq "$n" ] || {
            echo "bench: helm $id: $deployed of $n releases deployed after sync --once" >&2
            cat "$work/stderr" >&2
            exit 1
          }
          # The no-op pass: same commit, releases in sync.
          : > "$work/helm-calls.log"
          repo_since=$(wc -l < "$work/http.log")
          read -ra since <<<"$(audit_lines)"
          read -r wall own tree <<<"$(measure_own "${helm_sync[@]}")"
          read -r writes total <<<"$(count_requests "${since[@]}")"
          noop_walls+=("$wall") noop_writes+=("$writes") noop_totals+=("$total") noop_cpus+=("$(cat "$work/cpu")")
          noop_calls+=("$(wc -l < "$work/helm-calls.log")")
          noop_repo+=("$(tail -n +$((repo_since + 1)) "$work/http.log" | grep -c '"GET ' || true)")
          [ "${noop_calls[-1]}" -eq 0 ] || {
            echo "bench: helm $id: the no-op pass started helm:" >&2
            cat "$work/helm-calls.log" >&2
          }
          # Clean the cluster for the next run: a commit without the profile withdraws it, which
          # uninstalls the releases (not timed).
          rm -f "$work/repo-$id/profiles/helm.yaml"
          git -C "$work/repo-$id" add -A
          commit "$work/repo-$id" "withdraw"
          git -C "$work/repo-$id" push -q "$work/bare-$id.git" main
          "${helm_sync[@]}" >/dev/null 2>&1 || true
          left=$(helm_deployed "$n" any)
          [ "$left" -eq 0 ] || { echo "bench: helm $id: $left releases left after withdraw" >&2; exit 1; }
        done
        what="commit → $n releases deployed, 1 cluster, 1 profile (chart download incl.)"
        [ "$n_runs" -eq "$runs" ] || what+=" [$n_runs runs]"
        row helm "$what" \
          "$(printf '%s\n' "${walls[@]}" | median) s ($(printf '%s\n' "${walls[@]}" | spread))" \
          "flotilla $(( $(max "${owns[@]}") / 1024 )) MiB peak RSS (largest helm child $(( $(max "${trees[@]}") / 1024 )) MiB); helm processes $(max "${calls[@]}") ($call_kinds)"
        row helm-noop "second sync --once, no new commit ($n releases in sync)" \
          "$(printf '%s\n' "${noop_walls[@]}" | median) s ($(printf '%s\n' "${noop_walls[@]}" | spread))" \
          "helm processes $(max "${noop_calls[@]}"), chart repo GETs $(max "${noop_repo[@]}"), writes $(max "${noop_writes[@]}"), requests $(printf '%s\n' "${noop_totals[@]}" | median), CPU $(printf '%s\n' "${noop_cpus[@]}" | median) s"
      done
      ;;
    drift)
      objects=500 edits=20 idle=30
      [ $quick -eq 1 ] && objects=50 edits=5 idle=10
      rm -rf "$work/drift"
      make_drift_repo "$work/drift" "$objects"
      git init -q -b main "$work/drift"
      git -C "$work/drift" add -A
      commit "$work/drift" "drift bench"
      FLOTILLA_LOG=info "$flotilla" run --http-addr off --repo "$work/drift" "${sync_args[@]}" --interval 60s \
        --cache-dir "$work/cache-drift" --notes-ref refs/notes/drift 2>"$work/drift.log" &
      daemon_pid=$!
      for ((w = 0; w < 600; w++)); do
        git -C "$work/drift" notes --ref refs/notes/drift-state show HEAD >/dev/null 2>&1 &&
          grep -q 'drift watches' "$work/drift.log" && break
        sleep 0.1
      done
      git -C "$work/drift" notes --ref refs/notes/drift-state show HEAD >/dev/null 2>&1 ||
        { echo "bench: drift: no first pass within 60 s" >&2; cat "$work/drift.log" >&2; exit 1; }
      watches=$(grep 'drift watches' "$work/drift.log" | tail -n 1 | sed 's/.*watches=//')
      sleep 3 # the watches list what exists
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon_pid/status")
      hwm=$(awk '/VmHWM/ {print $2}' "/proc/$daemon_pid/status")
      ticks0=$(cpu_ticks "$daemon_pid")
      sleep "$idle"
      ticks1=$(cpu_ticks "$daemon_pid")
      cpu_pct=$(awk -v d=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v s="$idle" 'BEGIN {printf "%.2f", 100 * d / hz / s}')
      per=$((objects / 10))
      for ((e = 1; e <= edits; e++)); do
        c=c$(((e - 1) % 3 + 1))
        "$kubectl" --kubeconfig "$work/fleet/$c.kubeconfig" -n drift patch configmap \
          "p$(((e - 1) % 10 + 1))-o$(((e - 1) % per + 1))" --type merge \
          -p "{\"data\":{\"value\":\"edited-$e\"}}" --field-manager bench-edit >/dev/null ||
          { echo "bench: drift: edit $e failed; the note and the daemon's log:" >&2
            git -C "$work/drift" notes --ref refs/notes/drift show HEAD >&2; cat "$work/drift.log" >&2; exit 1; }
        sleep 0.5
      done
      sleep 2
      # Per edit: its completion (fieldManager=bench-edit) → the next non-dry-run apply of the
      # same object by flotilla (fieldManager=flotilla) completing.
      read -r lat_median lat_max lat_n <<<"$(python3 - "$work/fleet/logs" <<'PY'
import json, sys, datetime
def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
lats = []
for c in ["c1", "c2", "c3"]:
    edits = {}
    with open(f"{sys.argv[1]}/{c}.audit.log") as f:
        for line in f:
            e = json.loads(line)
            uri = e.get("requestURI", "")
            if e.get("verb") != "patch" or e.get("objectRef", {}).get("resource") != "configmaps":
                continue
            name = e["objectRef"].get("name")
            if "fieldManager=bench-edit" in uri:
                edits[name] = ts(e["stageTimestamp"])
            elif "fieldManager=flotilla" in uri and "dryRun" not in uri and name in edits:
                lats.append(ts(e["stageTimestamp"]) - edits.pop(name))
lats.sort()
print(f"{lats[len(lats) // 2]:.3f} {lats[-1]:.3f} {len(lats)}" if lats else "- - 0")
PY
)"
      [ "$lat_n" -eq "$edits" ] || { echo "bench: drift: $lat_n of $edits edits repaired" >&2; cat "$work/drift.log" >&2; exit 1; }
      kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""
      withdraw_all "$work/drift" --repo "$work/drift" "${sync_args[@]}" --cache-dir "$work/cache-drift" \
        --notes-ref refs/notes/drift
      row drift "$edits edits of an owned field → re-applied (audit: edit done → repair done)" \
        "median $lat_median s, max $lat_max s" "target ≤ 2 s, max ≤ 10 s"
      row drift-mem "flotilla run watching 3 clusters × $objects objects ($watches watches)" \
        "-" "RSS $((rss / 1024)) MiB (peak $((hwm / 1024)) MiB)"
      row drift-idle "daemon CPU while nothing changes (${idle} s, watches open)" \
        "-" "$cpu_pct % of one core"
      ;;
    plan)
      rm -rf "$work/plan"
      scripts/gen-fleet.sh --out "$work/plan" --clusters 1000 --profiles 20 --objects 10
      git init -q -b main "$work/plan"
      git -C "$work/plan" add -A
      commit "$work/plan" "base"
      sed -i 's/value: "v1"/value: "v2"/' "$work/plan/manifests/p7/o3.yaml"
      commit "$work/plan" "head: one template value"
      walls=() rsss=()
      for ((r = 1; r <= runs; r++)); do
        # Exit 1 (something would change) is the expected outcome.
        read -r wall rss <<<"$(measure bash -c '"$@"; [ $? -eq 1 ]' plan "$flotilla" plan \
          --repo "$work/plan" --base HEAD~1 --head HEAD --output "$work/plan.md")"
        walls+=("$wall") rsss+=("$rss")
      done
      grep -q '1000 of 1000 clusters would change' "$work/plan.md" || {
        echo "bench: plan: unexpected output" >&2; head -n 20 "$work/plan.md" >&2; exit 1; }
      row plan "flotilla plan, 1000 clusters × 20 profiles × 10 objects, 1 value changed" \
        "$(printf '%s\n' "${walls[@]}" | median) s ($(printf '%s\n' "${walls[@]}" | spread))" \
        "$(( $(max "${rsss[@]}") / 1024 )) MiB peak RSS; $(wc -c < "$work/plan.md") B markdown"
      # Worst case: a label of every cluster changes, so every profile of every cluster is
      # rendered on both sides and every object differs (200,000 diffs).
      sed -i 's/shard: s/shard: t/' "$work/plan/clusters/fleet.yaml"
      commit "$work/plan" "relabel every cluster"
      walls=() rsss=()
      for ((r = 1; r <= (runs < 3 ? runs : 3); r++)); do
        read -r wall rss <<<"$(measure bash -c '"$@"; [ $? -eq 1 ]' plan "$flotilla" plan \
          --repo "$work/plan" --base HEAD~1 --head HEAD --output "$work/plan.md")"
        walls+=("$wall") rsss+=("$rss")
      done
      row plan-all "the same, every cluster relabelled: 20,000 profile renders per side" \
        "$(printf '%s\n' "${walls[@]}" | median) s ($(printf '%s\n' "${walls[@]}" | spread))" \
        "$(( $(max "${rsss[@]}") / 1024 )) MiB peak RSS"
      ;;
    mttp)
      for n in "${apps[@]}"; do
        walls=() rsss=() noop_walls=() noop_writes=() noop_totals=() noop_cpus=() one_walls=() loop_walls=()
        for ((r = 1; r <= runs; r++)); do
          id=mttp-$n-$r
          rm -rf "$work/repo-$id" "$work/bare-$id.git" "$work/cache-$id" "$work/kubectl-$id"
          make_mttp_repo "$work/repo-$id" "$id" "$n"
          git init -q -b main "$work/repo-$id"
          git -C "$work/repo-$id" add -A
          commit "$work/repo-$id" "mttp bench $id"
          git init -q --bare -b main "$work/bare-$id.git"
          git -C "$work/repo-$id" remote add origin "$work/bare-$id.git"
          git -C "$work/repo-$id" push -q origin main
          mttp_sync=("$flotilla" sync --once --repo "file://$work/bare-$id.git" "${sync_args[@]}"
            --cache-dir "$work/cache-$id" --notes-ref "refs/notes/$id")
          read -r wall rss <<<"$(measure "${mttp_sync[@]}")"
          walls+=("$wall") rsss+=("$rss")
          got=$(mttp_count "$id")
          [ "$got" -eq $((4 * n)) ] || {
            echo "bench: mttp $id: $got of $((4 * n)) objects after sync --once" >&2
            cat "$work/stderr" >&2
            exit 1
          }
          # The no-op pass: same commit, everything in sync.
          read -ra since <<<"$(audit_lines)"
          read -r wall rss <<<"$(measure "${mttp_sync[@]}")"
          read -r writes total <<<"$(count_requests "${since[@]}")"
          noop_walls+=("$wall") noop_writes+=("$writes") noop_totals+=("$total") noop_cpus+=("$(cat "$work/cpu")")
          # kubectl, the identical objects in namespace kubectl-N-r: one invocation of the
          # directory (the Namespace file sorts first) ...
          mttp_manifests "$work/kubectl-$id/one" "kubectl-$n-$r" "$n"
          read -r wall rss <<<"$(measure "$kubectl" --kubeconfig "$work/fleet/c1.kubeconfig" \
            apply --server-side --force-conflicts -f "$work/kubectl-$id/one")"
          one_walls+=("$wall")
          got=$(mttp_count "kubectl-$n-$r")
          [ "$got" -eq $((4 * n)) ] || { echo "bench: mttp $id: kubectl applied $got of $((4 * n))" >&2; exit 1; }
          withdraw_all "$work/repo-$id" "${mttp_sync[@]:3}"
          # ... and one invocation per app (the Namespace first, in the timed loop), in namespace
          # kubectl-loop-N-r; ~0.2 s per kubectl process, so for N ≥ 500 in the first run only.
          [ "$n" -ge 500 ] && [ "$r" -gt 1 ] && continue
          mttp_manifests "$work/kubectl-$id/loop" "kubectl-loop-$n-$r" "$n"
          # shellcheck disable=SC2016 # the loop's script expands its own arguments
          read -r wall rss <<<"$(measure bash -c 'k=$1 cfg=$2 dir=$3 n=$4
            "$k" --kubeconfig "$cfg" apply --server-side -f "$dir/00-namespace.yaml" || exit 1
            for ((i = 1; i <= n; i++)); do
              "$k" --kubeconfig "$cfg" apply --server-side -f "$dir/app$i.yaml" || exit 1
            done' loop "$kubectl" "$work/fleet/c1.kubeconfig" "$work/kubectl-$id/loop" "$n")"
          loop_walls+=("$wall")
          got=$(mttp_count "kubectl-loop-$n-$r")
          [ "$got" -eq $((4 * n)) ] || { echo "bench: mttp $id: the kubectl loop applied $got of $((4 * n))" >&2; exit 1; }
        done
        fl=$(printf '%s\n' "${walls[@]}" | median)
        one=$(printf '%s\n' "${one_walls[@]}" | median)
        row mttp "commit → $((4 * n)) objects applied, 1 cluster (flotilla sync --once)" \
          "$fl s ($(printf '%s\n' "${walls[@]}" | spread))" \
          "$(( $(max "${rsss[@]}") / 1024 )) MiB peak RSS; flotilla/kubectl (one apply) $(awk -v a="$fl" -v b="$one" 'BEGIN {printf "%.2f", a / b}')"
        what="the same $n apps, kubectl apply --server-side: one invocation; one per app"
        [ ${#loop_walls[@]} -eq "$runs" ] || what+=" [${#loop_walls[@]} run]"
        row mttp-kubectl "$what" \
          "$one s ($(printf '%s\n' "${one_walls[@]}" | spread)); $(printf '%s\n' "${loop_walls[@]}" | median) s ($(printf '%s\n' "${loop_walls[@]}" | spread))" \
          "target: 1000 apps ≤ 30 s, not slower than one kubectl apply (Flux: 4m15s/1000, 16 cores)"
        row mttp-noop "second sync --once, no new commit ($((4 * n + 1)) objects in sync)" \
          "$(printf '%s\n' "${noop_walls[@]}" | median) s ($(printf '%s\n' "${noop_walls[@]}" | spread))" \
          "writes $(max "${noop_writes[@]}"), requests $(printf '%s\n' "${noop_totals[@]}" | median), CPU $(printf '%s\n' "${noop_cpus[@]}" | median) s"
      done
      ;;
    render)
      # Base: the inventory of 1000 clusters and no profile; head: 21 profiles (20 × 10 templated
      # ConfigMaps and the Namespace), so every cluster's 201 objects are rendered and planned.
      rm -rf "$work/render"
      scripts/gen-fleet.sh --out "$work/render" --clusters 1000 --profiles 20 --objects 10
      git init -q -b main "$work/render"
      git -C "$work/render" add clusters
      git -C "$work/render" -c user.name=bench -c user.email=bench@example.com commit -q -m "inventory only"
      git -C "$work/render" add -A
      commit "$work/render" "20 templated profiles"
      for format in markdown json; do
        walls=() rsss=() cpus=()
        for ((r = 1; r <= runs; r++)); do
          # Exit 1 (something would change) is the expected outcome.
          read -r wall rss <<<"$(measure bash -c '"$@"; [ $? -eq 1 ]' plan "$flotilla" plan \
            --repo "$work/render" --base HEAD~1 --head HEAD --format "$format" --output "$work/render.out")"
          walls+=("$wall") rsss+=("$rss") cpus+=("$(cat "$work/cpu")")
        done
        case $format in
          markdown) grep -q '1000 of 1000 clusters would change.*201000 added' "$work/render.out" ;;
          json) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["clusters"]) == 1000 and all(c["counts"]["added"] == 201 for c in d["clusters"])' "$work/render.out" ;;
        esac || { echo "bench: render: unexpected $format output" >&2; head -c 2000 "$work/render.out" >&2; exit 1; }
        row render "render + plan, 1000 clusters × 20 templated profiles × 10 objects (+1), $format" \
          "$(printf '%s\n' "${walls[@]}" | median) s ($(printf '%s\n' "${walls[@]}" | spread))" \
          "$(( $(max "${rsss[@]}") / 1024 )) MiB peak RSS; CPU $(printf '%s\n' "${cpus[@]}" | median) s; $(( $(wc -c < "$work/render.out") / 1024 )) KiB out; target ≤ 1 s, ≤ 200 MiB"
      done
      ;;
    fleet)
      # One profile of 50 ConfigMaps (templated with the cluster's name) to 10 apiservers; the
      # kubectl baseline applies the identical rendered objects (`flotilla render`, not timed; in
      # a namespace of its own) with one `kubectl apply --server-side` per cluster, one after the
      # other. Each run has its own profile and namespace names.
      walls=() rsss=() noop_walls=() noop_writes=() noop_totals=() noop_cpus=() k_walls=()
      n_clusters=${#clusters[@]}
      for ((r = 1; r <= runs; r++)); do
        id=fleet$r
        rm -rf "$work/repo-$id" "$work/bare-$id.git" "$work/cache-$id" "$work/kubectl-$id" "$work/krepo-$id"
        scripts/gen-fleet.sh --out "$work/repo-$id" --clusters "$n_clusters" --profiles 1 --objects 50 \
          --prefix "$id" --namespace "$id" --git
        git init -q --bare -b main "$work/bare-$id.git"
        git -C "$work/repo-$id" remote add origin "$work/bare-$id.git"
        git -C "$work/repo-$id" push -q origin main
        fleet_sync=("$flotilla" sync --once --repo "file://$work/bare-$id.git" "${sync_args[@]}"
          --cache-dir "$work/cache-$id" --notes-ref "refs/notes/$id")
        read -r wall rss <<<"$(measure "${fleet_sync[@]}")"
        walls+=("$wall") rsss+=("$rss")
        read -ra since <<<"$(audit_lines)"
        read -r wall rss <<<"$(measure "${fleet_sync[@]}")"
        read -r writes total <<<"$(count_requests "${since[@]}")"
        noop_walls+=("$wall") noop_writes+=("$writes") noop_totals+=("$total") noop_cpus+=("$(cat "$work/cpu")")
        scripts/gen-fleet.sh --out "$work/krepo-$id" --clusters "$n_clusters" --profiles 1 --objects 50 \
          --prefix "k$id" --namespace "k$id"
        mkdir -p "$work/kubectl-$id"
        for c in "${clusters[@]}"; do
          "$flotilla" render --path "$work/krepo-$id" --cluster "$c" > "$work/kubectl-$id/$c.yaml"
        done
        # shellcheck disable=SC2016 # the loop's script expands its own arguments
        read -r wall rss <<<"$(measure bash -c 'k=$1 fleet=$2 dir=$3; shift 3
          for c in "$@"; do
            "$k" --kubeconfig "$fleet/$c.kubeconfig" apply --server-side -f "$dir/$c.yaml" || exit 1
          done' loop "$kubectl" "$work/fleet" "$work/kubectl-$id" "${clusters[@]}")"
        k_walls+=("$wall")
        for c in "${clusters[@]}"; do
          for ns in "$id" "k$id"; do
            got=$("$kubectl" --kubeconfig "$work/fleet/$c.kubeconfig" get configmaps -n "$ns" --no-headers 2>/dev/null | wc -l)
            [ "$got" -ge 50 ] || { echo "bench: fleet $id: $got ConfigMaps in $c/$ns" >&2; cat "$work/stderr" >&2; exit 1; }
          done
        done
        withdraw_all "$work/repo-$id" "${fleet_sync[@]:3}"
      done
      fl=$(printf '%s\n' "${walls[@]}" | median)
      kc=$(printf '%s\n' "${k_walls[@]}" | median)
      row fleet "commit → 1 profile × 50 objects on $n_clusters clusters (flotilla sync --once)" \
        "$fl s ($(printf '%s\n' "${walls[@]}" | spread))" \
        "$(( $(max "${rsss[@]}") / 1024 )) MiB peak RSS; flotilla/kubectl $(awk -v a="$fl" -v b="$kc" 'BEGIN {printf "%.2f", a / b}')"
      row fleet-kubectl "the same objects, kubectl apply --server-side cluster by cluster" \
        "$kc s ($(printf '%s\n' "${k_walls[@]}" | spread))" "-"
      row fleet-noop "second sync --once, no new commit ($((n_clusters * 51)) objects in sync)" \
        "$(printf '%s\n' "${noop_walls[@]}" | median) s ($(printf '%s\n' "${noop_walls[@]}" | spread))" \
        "writes $(max "${noop_writes[@]}"), requests $(printf '%s\n' "${noop_totals[@]}" | median), CPU $(printf '%s\n' "${noop_cpus[@]}" | median) s"
      ;;
  esac
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
table=$(
  echo "### $(date -u '+%Y-%m-%d %H:%M UTC') — $(nproc) cores, $mem, $cpu"
  echo
  echo "Command: \`scripts/bench.sh $args\` ($runs runs each; median (min–max)); flotilla $built_from, release build;"
  echo "load average (1/5/15 min) $load_before before the build and the clusters, $(cut -d' ' -f1-3 /proc/loadavg) at the end;"
  if [ ${#clusters[@]} -gt 0 ]; then
    echo "kube-apiserver $(sort -V "${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}/kube-versions" | tail -n 1), one etcd, ${#clusters[@]} apiserver(s) on this machine."
  else
    echo "no control planes (plan only)."
  fi
  echo
  echo "| workload | what | time | other |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
)
echo "$table"
if [ $quick -eq 0 ]; then
  mkdir -p docs
  # shellcheck disable=SC2016 # the backquotes are Markdown
  [ -f docs/benchmarks.md ] || printf '# Benchmarks\n\nAppended by `scripts/bench.sh`; every figure is measured on the machine named in its heading.\n' > docs/benchmarks.md
  printf '\n%s\n' "$table" >> docs/benchmarks.md
fi
