#!/usr/bin/env bash
# Benchmarks of the sync engine against real local control planes (the launcher), with a
# release build. Prints a table and appends it, with date, machine, versions and the command,
# to docs/benchmarks.md. Nothing here asserts a time: the figures are recorded, not tested.
#
#   scripts/bench.sh [--quick] [--runs N] [WORKLOAD...]
#
# Workloads (default: all):
#   sync     one commit, 3 clusters, 20 profiles × 10 ConfigMaps: `flotilla sync --once` wall
#            time from start to notes pushed, peak RSS; then the no-op pass: the next
#            `sync --once` with no new commit: write requests (from the apiservers' audit logs;
#            must be 0), requests in total, wall time, and whether the poll fetched (must not)
#   latency  `flotilla run` on a local repository: `git commit` → object applied on all 3
#            clusters (last write's completion in the audit logs minus the commit time)
# --quick: 1 run each, 2 profiles (a smoke test; CI may run it).
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
    sync | latency) workloads+=("$1"); shift ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#workloads[@]} -gt 0 ] || workloads=(sync latency)
profiles=20
[ $quick -eq 1 ] && profiles=2

scripts/testbin.sh >/dev/null
cargo build --release --locked --quiet
flotilla=${CARGO_TARGET_DIR:-$root/target}/release/flotilla

work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-bench.XXXXXX")
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
  scripts/local-clusters.sh down --dir "$work/fleet" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

scripts/local-clusters.sh up --dir "$work/fleet" --owner-pid $$ --names c1,c2,c3 >/dev/null

# A config repo: 3 clusters, $profiles profiles of 10 ConfigMaps each (templated with the
# cluster's name), one namespace profile they depend on.
make_repo() {
  local repo=$1
  mkdir -p "$repo/clusters" "$repo/profiles" "$repo/manifests"
  for c in c1 c2 c3; do
    printf -- '---\napiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: %s\n  labels: {env: bench}\n' "$c"
  done > "$repo/clusters/fleet.yaml"
  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n' > "$repo/manifests/ns.yaml"
  printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: bench-ns\nspec:\n  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/ns.yaml}\n' \
    > "$repo/profiles/ns.yaml"
  local p o
  for ((p = 1; p <= profiles; p++)); do
    mkdir -p "$repo/manifests/p$p"
    for ((o = 1; o <= 10; o++)); do
      printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p%s-o%s\n  namespace: bench\ndata:\n  cluster: "{{ cluster.metadata.name }}"\n  profile: "p%s"\n' \
        "$p" "$o" "$p" > "$repo/manifests/p$p/o$o.yaml"
    done
    printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: p%s\nspec:\n  clusterSelector: {matchLabels: {env: bench}}\n  dependsOn: [bench-ns]\n  policyRefs:\n  - {path: manifests/p%s, template: true}\n' \
      "$p" "$p" > "$repo/profiles/p$p.yaml"
  done
}

commit() { git -C "$1" -c user.name=bench -c user.email=bench@example.com commit -q -a -m "$2"; }

# count_requests SINCE_LINES... → "writes total" over the 3 audit logs after the given line counts
audit_lines() { for c in c1 c2 c3; do wc -l < "$work/fleet/logs/$c.audit.log"; done | tr '\n' ' '; }
count_requests() {
  python3 - "$work/fleet/logs" "$@" <<'PY'
import json, sys
logs, since = sys.argv[1], [int(x) for x in sys.argv[2:]]
writes = total = 0
for i, c in enumerate(["c1", "c2", "c3"]):
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

# measure CMD... → prints "wall_seconds max_rss_kib"
measure() {
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || {
    cat "$work/stderr" >&2
    return 1
  }
  cat "$work/time"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
spread() { sort -g | awk 'NR==1{min=$1} {max=$1} END {printf "%s–%s", min, max}'; }

rows=()
row() { rows+=("$(printf '| %-8s | %-58s | %-22s | %-14s |' "$1" "$2" "$3" "$4")"); }

sync_args=(--kubeconfig-dir "$work/fleet")

for workload in "${workloads[@]}"; do
  case $workload in
    sync)
      walls=() rsss=() noop_walls=() noop_writes=() noop_totals=() noop_fetched=()
      for ((r = 1; r <= runs; r++)); do
        rm -rf "$work/repo$r" "$work/bare$r.git" "$work/cache$r"
        make_repo "$work/repo$r"
        git init -q -b main "$work/repo$r"
        git -C "$work/repo$r" add -A
        commit "$work/repo$r" "bench run $r"
        git init -q --bare -b main "$work/bare$r.git"
        git -C "$work/repo$r" push -q "$work/bare$r.git" main
        read -r wall rss <<<"$(measure "$flotilla" sync --once --repo "file://$work/bare$r.git" \
          "${sync_args[@]}" --cache-dir "$work/cache$r" --notes-ref "refs/notes/bench$r")"
        walls+=("$wall") rsss+=("$rss")
        since=$(audit_lines)
        read -r wall rss <<<"$(FLOTILLA_LOG=flotilla=debug measure "$flotilla" sync --once \
          --repo "file://$work/bare$r.git" "${sync_args[@]}" --cache-dir "$work/cache$r" \
          --notes-ref "refs/notes/bench$r")"
        read -r writes total <<<"$(count_requests $since)"
        noop_walls+=("$wall") noop_writes+=("$writes") noop_totals+=("$total")
        # The git adapter logs "fetched a new commit" only when a poll fetched.
        noop_fetched+=("$(grep -c 'fetched a new commit' "$work/stderr" || true)")
        # Clean the clusters for the next run: a commit without the profiles withdraws them.
        rm -rf "$work/repo$r/profiles/"p*.yaml
        git -C "$work/repo$r" add -A
        commit "$work/repo$r" "withdraw"
        git -C "$work/repo$r" push -q "$work/bare$r.git" main
        "$flotilla" sync --once --repo "file://$work/bare$r.git" "${sync_args[@]}" \
          --cache-dir "$work/cache$r" --notes-ref "refs/notes/bench$r" >/dev/null 2>&1 || true
      done
      objects=$((3 * (profiles * 10 + 1)))
      row sync "commit → notes pushed, 3 clusters × $profiles profiles × 10 objects ($objects objects)" \
        "$(printf '%s\n' "${walls[@]}" | median) s ($(printf '%s\n' "${walls[@]}" | spread))" \
        "$(( $(printf '%s\n' "${rsss[@]}" | sort -n | tail -n 1) / 1024 )) MiB peak RSS"
      row noop "second sync --once, no new commit ($objects objects in sync)" \
          "$(printf '%s\n' "${noop_walls[@]}" | median) s ($(printf '%s\n' "${noop_walls[@]}" | spread))" \
          "writes $(printf '%s\n' "${noop_writes[@]}" | sort -n | tail -n 1), requests $(printf '%s\n' "${noop_totals[@]}" | median), git fetches $(printf '%s\n' "${noop_fetched[@]}" | sort -n | tail -n 1)"
      ;;
    latency)
      lats=()
      rm -rf "$work/local"
      make_repo "$work/local"
      rm -f "$work/local/profiles/"p*.yaml
      git init -q -b main "$work/local"
      git -C "$work/local" add -A
      commit "$work/local" "namespace only"
      "$flotilla" run --repo "$work/local" "${sync_args[@]}" --interval 60s \
        --cache-dir "$work/cache-latency" --notes-ref refs/notes/latency 2>"$work/daemon.log" &
      daemon_pid=$!
      sleep 3
      for ((r = 1; r <= runs; r++)); do
        printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: latency-%s\n  namespace: bench\ndata:\n  run: "%s"\n' "$r" "$r" \
          > "$work/local/manifests/latency.yaml"
        printf 'apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: latency\nspec:\n  clusterSelector: {}\n  dependsOn: [bench-ns]\n  policyRefs:\n  - {path: manifests/latency.yaml}\n' \
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
      row latency "git commit in a local repo → applied on 3 clusters (run, watcher)" \
        "$(printf '%s\n' "${lats[@]}" | median) s ($(printf '%s\n' "${lats[@]}" | spread))" "target ≤ 2 s"
      ;;
  esac
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
table=$(
  echo "### $(date -u '+%Y-%m-%d %H:%M UTC') — $(nproc) cores, $mem, $cpu"
  echo
  echo "Command: \`scripts/bench.sh $args\` ($runs runs each; median (min–max)); flotilla $(git rev-parse --short HEAD), release build;"
  echo "kube-apiserver $(sort -V "${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}/kube-versions" | tail -n 1), one etcd, 3 apiservers on this machine."
  echo
  echo "| workload | what | time | other |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
)
echo "$table"
if [ $quick -eq 0 ]; then
  mkdir -p docs
  [ -f docs/benchmarks.md ] || printf '# Benchmarks\n\nAppended by `scripts/bench.sh`; every figure is measured on the machine named in its heading.\n' > docs/benchmarks.md
  printf '\n%s\n' "$table" >> docs/benchmarks.md
fi
