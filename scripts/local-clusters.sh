#!/usr/bin/env bash
# Local Kubernetes control planes for flotilla's integration tests, demo and benchmarks: ONE etcd
# and N kube-apiservers, each a separate "cluster" (its own etcd prefix, CA, serving certificate,
# service-account key and static admin token). No nodes, no controller-manager, no scheduler.
#
#   local-clusters.sh up --count N --dir DIR [--version X.Y[,X.Y...]] [--names a,b,c]
#                        [--owner-pid PID] [--timeout SECONDS]
#   local-clusters.sh stop --dir DIR --name NAME
#   local-clusters.sh start --dir DIR --name NAME [--timeout SECONDS]
#   local-clusters.sh down --dir DIR
#
#   --count     number of clusters (default: the number of --names, else 1)
#   --names     comma-separated cluster names (default cluster-1..N); lowercase DNS labels
#   --version   kube minor (1.34), or full version (v1.34.4); a comma list is assigned to the
#               clusters in order and repeats if shorter (default: newest in $BIN/kube-versions)
#   --owner-pid a detached watchdog runs `down` when this process exits
#   --timeout   seconds to wait for etcd and for every apiserver to become ready (default 120)
#
# `up` prints one line per cluster on stdout: NAME VERSION KUBECONFIG (also kept in DIR/clusters);
# progress and errors go to stderr. DIR/<name>.kubeconfig has the context <name> (current), server
# https://127.0.0.1:PORT, the CA inline and the admin token (user flotilla-admin, group
# system:masters). Logs are in DIR/logs and survive `down`; everything else `up` wrote is removed
# by `down`. If `up` fails half-way it stops what it started.
#
# `stop` stops one cluster's apiserver (etcd and the other clusters keep running); `start` starts
# it again on the same port with the same certificates and token, so its kubeconfig stays valid,
# and waits until it is ready. Both do nothing when the apiserver is already stopped / running.
# Per-cluster state (port, version) is in DIR/run/<name>.state; `down` stops everything.
#
# Audit: every apiserver writes an audit log, DIR/logs/<name>.audit.log (JSON lines, level
# Metadata for every request, stage ResponseComplete only; policy DIR/pki/audit-policy.yaml; no
# rotation; `up` empties it, `start` appends). The log backend is blocking: an event is on disk
# before its response is sent. The launcher's own readiness probes use a second token (user
# flotilla-launcher), so the flotilla-admin entries are exactly the kubeconfig users' requests.
#
# Binaries come from scripts/testbin.sh's cache: FLOTILLA_TESTBIN (default
# $HOME/.cache/flotilla/testbin).
set -euo pipefail

BIN="${FLOTILLA_TESTBIN:-$HOME/.cache/flotilla/testbin}"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1

log() { printf 'local-clusters: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF" >&2
  exit 2
}

# abs_dir DIR — absolute path without requiring the directory to exist.
abs_dir() {
  case $1 in
    /*) printf '%s\n' "${1%/}" ;;
    *) printf '%s/%s\n' "$PWD" "${1%/}" ;;
  esac
}

# free_ports N — N distinct TCP ports on 127.0.0.1 that are free right now. Drawn at random below
# the kernel's ephemeral range, so outgoing connections cannot take them before the server binds,
# and so concurrent launchers rarely pick the same ones (a collision is retried, see start_*).
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
want, got, socks = int(sys.argv[1]), [], []
for port in random.sample(range(20000, 32000), 400):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
    got.append(port)
    if len(got) == want:
        break
for s in socks:
    s.close()
if len(got) < want:
    sys.exit("no free ports")
print(" ".join(map(str, got)))
PY
}

# alive PID DIR — PID runs and is ours: its command line mentions DIR (guards against pid reuse).
# The command line is also empty while the process is inside execve (from the moment the new
# program's memory replaces the old until its arguments are set up: milliseconds when the binary
# is not in the page cache) and once it is exiting or a zombie. So an empty one is decided by
# /proc/PID/stat: a zombie is gone; anything else that is not a kernel thread (they have no command
# line either) counts as alive, since our shell just started it or it is still exiting.
alive() {
  local pid=$1 dir=$2 cmdline stat fields
  cmdline="$({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null)" || return 1
  if [ -n "$cmdline" ]; then
    [[ "$cmdline " == *"$dir/"* || "$cmdline " == *"$dir "* ]]
    return
  fi
  { read -r stat < "/proc/$pid/stat"; } 2>/dev/null || return 1
  # Fields after the parenthesised name: state (field 3) first, flags (field 9) seventh.
  read -r -a fields <<<"${stat##*) }"
  [[ ${fields[0]} != [ZX] ]] && (((fields[6] & 0x200000) == 0)) # PF_KTHREAD
}

# proc_start PID — the start time of PID (field 22 of /proc/PID/stat); fails when PID is gone.
proc_start() {
  local stat fields
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
  read -r -a fields <<<"${stat##*) }"
  printf '%s\n' "${fields[19]}"
}

# exited PID START — the process PID that started at START has finished exiting: gone, reaped and
# replaced by another (start time differs), or every one of its threads is a zombie (no thread
# holds its files, e.g. its listening socket, any more).
exited() {
  local pid=$1 start=$2 now t stat fields
  now=$(proc_start "$pid") || return 0
  [ "$now" = "$start" ] || return 0
  for t in "/proc/$pid/task"/*/stat; do
    { read -r stat < "$t"; } 2>/dev/null || continue
    read -r -a fields <<<"${stat##*) }"
    [[ ${fields[0]} == [ZX] ]] || return 1
  done
  return 0
}

# ---------------------------------------------------------------------------------------- down

# stop DIR PID... — TERM those that are alive (and ours), wait up to 10 s until they have exited
# completely (not merely lost their command line: see exited), then KILL.
stop() {
  local dir=$1 pid i left=() starts=() start still
  shift
  for pid in "$@"; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    alive "$pid" "$dir" || continue
    start=$(proc_start "$pid") || continue
    left+=("$pid")
    starts[pid]=$start
  done
  [ ${#left[@]} -gt 0 ] || return 0
  kill -TERM "${left[@]}" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    if [ "$i" -eq 100 ]; then
      log "killing ${left[*]} (did not stop on TERM)"
      kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    still=()
    for pid in "${left[@]}"; do exited "$pid" "${starts[pid]}" || still+=("$pid"); done
    left=("${still[@]+"${still[@]}"}")
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.1
  done
}

cmd_down() {
  local dir=$1
  [ -d "$dir" ] || return 0
  local run="$dir/run" first=() last=() f pid
  if [ -d "$run" ]; then
    for f in "$run"/*.pid; do
      [ -e "$f" ] || continue
      pid=$(<"$f")
      [[ $pid =~ ^[0-9]+$ ]] || continue
      # The watchdog runs `down` itself; it must not signal the shell that runs it.
      [ "$pid" = "$$" ] && continue
      alive "$pid" "$dir" || continue
      # etcd goes last: an apiserver whose etcd is gone can hang in shutdown.
      if [ "$(basename "$f")" = etcd.pid ]; then last+=("$pid"); else first+=("$pid"); fi
    done
  fi
  stop "$dir" "${first[@]+"${first[@]}"}"
  stop "$dir" "${last[@]+"${last[@]}"}"
  # Remove everything `up` wrote except the logs.
  rm -rf "$run" "$dir/etcd" "$dir/pki" "$dir/clusters"
  rm -f "$dir"/*.kubeconfig
}

# ------------------------------------------------------------------------------------ watchdog

# _watch DIR OWNER INSTANCE — runs detached; calls down when OWNER exits. Stops by itself when
# DIR no longer holds the `up` that started it (down ran, or a later up replaced it).
cmd_watch() {
  local dir=$1 owner=$2 instance=$3
  ours() { [ "$(cat "$dir/run/instance" 2>/dev/null)" = "$instance" ]; }
  ours || return 0
  echo "$$" > "$dir/run/watchdog.pid"
  while [ -d "/proc/$owner" ] && ours; do sleep 0.5; done
  if ours; then cmd_down "$dir"; fi
  return 0
}

# ------------------------------------------------------------------------------------------ up

# resolve_version SPEC — full version (v1.34.4) in kube-versions for a minor or a full version.
resolve_version() {
  local spec=${1#v} v
  while read -r v; do
    [ -n "$v" ] || continue
    if [ "${v#v}" = "$spec" ] || [[ ${v#v} == "$spec".* ]]; then
      printf '%s\n' "$v"
      return 0
    fi
  done < "$BIN/kube-versions"
  return 1
}

# make_pki NAME — CA, serving certificate, service-account key and token for one cluster.
make_pki() {
  local name=$1 p="$PKI/$1"
  mkdir -p "$p"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$p/ca.key" -out "$p/ca.crt" -days 3650 -subj "/CN=flotilla-$name-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$p/serving.key" -out "$p/serving.csr" -subj "/CN=kube-apiserver" 2>/dev/null
  cat > "$p/serving.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
  openssl x509 -req -in "$p/serving.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
    -out "$p/serving.crt" -days 3650 -extfile "$p/serving.ext" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$p/sa.key" 2>/dev/null
  openssl ec -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  # The admin token (kubeconfig) and the launcher's own probe token: distinct users, so that the
  # audit log tells the kubeconfig users' requests from the launcher's.
  local token probe
  token=$(openssl rand -hex 24)
  probe=$(openssl rand -hex 24)
  printf '%s\n' "$token" > "$p/token"
  printf '%s\n' "$probe" > "$p/probe-token"
  {
    printf '%s,flotilla-admin,flotilla-admin,"system:masters"\n' "$token"
    printf '%s,flotilla-launcher,flotilla-launcher,"system:masters"\n' "$probe"
  } > "$p/tokens.csv"
  chmod 600 "$p"/*.key "$p/token" "$p/probe-token" "$p/tokens.csv"
}

# write_audit_policy — one policy for every apiserver: Metadata for everything, and only the
# ResponseComplete stage (one event per request, with the response code and both timestamps).
write_audit_policy() {
  cat > "$PKI/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
POLICY
}

# start_etcd CLIENT_PORT PEER_PORT — one etcd for every cluster; sets ETCD_URL, ETCD_PID.
start_etcd() {
  local client=$1 peer=$2
  rm -rf "$DIR/etcd"
  "$BIN/etcd" --name flotilla --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "flotilla=http://127.0.0.1:$peer" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn \
    </dev/null >"$LOGS/etcd.log" 2>&1 &
  ETCD_PID=$!
  echo "$ETCD_PID" > "$RUN/etcd.pid"
  ETCD_URL="http://127.0.0.1:$client"
  ETCD_PEER_URL="http://127.0.0.1:$peer"
  echo "$ETCD_URL" > "$RUN/etcd.url"
}

# etcd_ours — the etcd answering at ETCD_URL is the one start_etcd started: its only member has our
# peer URL. (If another launcher's etcd took our client port first, it answers /health too while
# ours exits with 'address already in use'.)
etcd_ours() {
  curl -fsS --max-time 2 -X POST -d '{}' "$ETCD_URL/v3/cluster/member/list" 2>/dev/null \
    | grep -qF "\"$ETCD_PEER_URL\""
}

# wait_etcd — until etcd is healthy; restarts it on fresh ports if its ports were taken.
wait_etcd() {
  local attempt=1 client peer deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if curl -fsS --max-time 1 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"' \
      && etcd_ours; then
      return 0
    fi
    if ! alive "$ETCD_PID" "$DIR"; then
      if grep -q 'address already in use' "$LOGS/etcd.log" && [ $attempt -lt 3 ]; then
        attempt=$((attempt + 1))
        log "etcd: port taken, retrying"
        read -r client peer <<<"$(free_ports 2)"
        start_etcd "$client" "$peer"
        continue
      fi
      die "etcd exited; tail of $LOGS/etcd.log:
$(tail -n 30 "$LOGS/etcd.log")"
    fi
    sleep 0.05
  done
  die "etcd not healthy after ${TIMEOUT}s; tail of $LOGS/etcd.log:
$(tail -n 30 "$LOGS/etcd.log")"
}

# start_apiserver INDEX [PORT] — (re)starts cluster INDEX's apiserver on PORT, or a fresh port.
# Its log is DIR/logs/NAME.log, emptied unless APISERVER_LOG_APPEND=1; the audit log is appended.
start_apiserver() {
  local i=$1 name=${NAMES[$1]} version=${VERSIONS[$1]} port=${2:-} p="$PKI/${NAMES[$1]}"
  local extra=()
  read -r -a extra <<<"$APISERVER_EXTRA"
  [ -n "$port" ] || port=$(free_ports 1)
  PORTS[i]=$port
  [ "${APISERVER_LOG_APPEND:-0}" = 1 ] || : > "$LOGS/$name.log"
  "$BIN/kube-apiserver-$version" \
    --etcd-servers="$ETCD_URL" --etcd-prefix="/$name" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
    --cert-dir="$p" --tls-cert-file="$p/serving.crt" --tls-private-key-file="$p/serving.key" \
    --client-ca-file="$p/ca.crt" \
    --token-auth-file="$p/tokens.csv" --authorization-mode=RBAC \
    --service-account-issuer="https://kubernetes.default.svc.cluster.local" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --disable-admission-plugins=ServiceAccount \
    --audit-policy-file="$PKI/audit-policy.yaml" --audit-log-path="$LOGS/$name.audit.log" \
    --audit-log-mode=blocking --audit-log-maxsize=1000000 --audit-log-maxbackup=0 \
    "${extra[@]}" \
    </dev/null >>"$LOGS/$name.log" 2>&1 &
  PIDS[i]=$!
  echo "${PIDS[i]}" > "$RUN/$name.pid"
}

# write_kubeconfig INDEX
write_kubeconfig() {
  local i=$1 name=${NAMES[$1]} p="$PKI/${NAMES[$1]}" ca token
  ca=$(base64 -w0 < "$p/ca.crt")
  token=$(<"$p/token")
  local out="$DIR/$name.kubeconfig"
  cat > "$out.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: $name
  cluster:
    server: https://127.0.0.1:${PORTS[i]}
    certificate-authority-data: $ca
users:
- name: $name-admin
  user:
    token: $token
contexts:
- name: $name
  context:
    cluster: $name
    user: $name-admin
current-context: $name
KC
  chmod 600 "$out.tmp"
  mv "$out.tmp" "$out"
}

# probe INDEX — 0 when the apiserver is ready and the default namespace exists. Authenticates as
# flotilla-launcher, not as the kubeconfig's flotilla-admin (see the audit note above).
probe() {
  local i=$1 p="$PKI/${NAMES[$1]}" base="https://127.0.0.1:${PORTS[$1]}" token
  token=$(<"$p/probe-token")
  [ "$(curl -sS --max-time 2 --cacert "$p/ca.crt" -H "Authorization: Bearer $token" \
    "$base/readyz" 2>/dev/null)" = ok ] || return 1
  # readyz can answer before the bootstrap controller created the namespace "default".
  curl -fsS -o /dev/null --max-time 2 --cacert "$p/ca.crt" -H "Authorization: Bearer $token" \
    "$base/api/v1/namespaces/default" 2>/dev/null
}

# wait_apiservers RETRIES — until every apiserver in NAMES is ready (TIMEOUT). One that exited
# because its port was taken is restarted on a fresh port, at most RETRIES times.
wait_apiservers() {
  local max_retries=$1 i
  local deadline=$((SECONDS + TIMEOUT)) pending=("${!NAMES[@]}") still retries=()
  for i in "${!NAMES[@]}"; do retries[i]=0; done
  while [ ${#pending[@]} -gt 0 ]; do
    still=()
    for i in "${pending[@]}"; do
      if probe "$i"; then
        continue
      fi
      if ! alive "${PIDS[i]}" "$DIR"; then
        if [ "${retries[i]}" -lt "$max_retries" ] \
          && grep -q 'address already in use' "$LOGS/${NAMES[i]}.log"; then
          retries[i]=$((retries[i] + 1))
          log "${NAMES[i]}: port ${PORTS[i]} taken, retrying"
          start_apiserver "$i"
          still+=("$i")
          continue
        fi
        die "kube-apiserver of ${NAMES[i]} (${VERSIONS[i]}) exited; tail of $LOGS/${NAMES[i]}.log:
$(tail -n 30 "$LOGS/${NAMES[i]}.log")"
      fi
      still+=("$i")
    done
    pending=("${still[@]+"${still[@]}"}")
    [ ${#pending[@]} -eq 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      i=${pending[0]}
      die "kube-apiserver of ${NAMES[i]} (${VERSIONS[i]}, https://127.0.0.1:${PORTS[i]}) not ready after ${TIMEOUT}s; tail of $LOGS/${NAMES[i]}.log:
$(tail -n 30 "$LOGS/${NAMES[i]}.log")"
    fi
    sleep 0.1
  done
}

# up_exit — EXIT trap of a failing `up`: stop whatever was started.
up_exit() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    log "up failed; cleaning up"
    cmd_down "$DIR"
    # Also what started but was not recorded (e.g. the watchdog's down removed DIR/run).
    stop "$DIR" ${ETCD_PID:+"$ETCD_PID"} "${PIDS[@]+"${PIDS[@]}"}"
  fi
}

cmd_up() {
  local count="" names="" versions="" owner="" dir=""
  TIMEOUT=120
  while [ $# -gt 0 ]; do
    case $1 in
      --count) count=${2:-}; shift 2 ;;
      --dir) dir=${2:-}; shift 2 ;;
      --version) versions=${2:-}; shift 2 ;;
      --names) names=${2:-}; shift 2 ;;
      --owner-pid) owner=${2:-}; shift 2 ;;
      --timeout) TIMEOUT=${2:-}; shift 2 ;;
      -h | --help) usage ;;
      *) die "up: unknown argument '$1' (see --help)" ;;
    esac
  done
  [ -n "$dir" ] || die "up: --dir is required"
  [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "up: --timeout must be a positive integer"
  [ -z "$owner" ] || [[ $owner =~ ^[1-9][0-9]*$ ]] || die "up: --owner-pid must be a pid"
  [ -z "$owner" ] || [ -d "/proc/$owner" ] || die "up: owner process $owner does not exist"

  NAMES=()
  if [ -n "$names" ]; then
    IFS=, read -r -a NAMES <<<"$names"
    [ -n "$count" ] || count=${#NAMES[@]}
  fi
  [ -n "$count" ] || count=1
  [[ $count =~ ^[1-9][0-9]*$ ]] || die "up: --count must be a positive integer"
  if [ ${#NAMES[@]} -eq 0 ]; then
    local n
    for ((n = 1; n <= count; n++)); do NAMES+=("cluster-$n"); done
  fi
  [ ${#NAMES[@]} -eq "$count" ] || die "up: --names has ${#NAMES[@]} names, --count is $count"
  local name seen=" "
  for name in "${NAMES[@]}"; do
    [[ $name =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
      || die "up: cluster name '$name' is not a lowercase DNS label"
    [[ $seen == *" $name "* ]] && die "up: cluster name '$name' given twice"
    seen+="$name "
  done

  local tool
  for tool in etcd kube-versions; do
    [ -e "$BIN/$tool" ] || die "$BIN/$tool is missing; run scripts/testbin.sh first"
  done
  for tool in openssl curl python3 base64; do
    command -v "$tool" >/dev/null || die "$tool is required"
  done
  local specs=() spec full
  if [ -n "$versions" ]; then
    IFS=, read -r -a specs <<<"$versions"
  else
    specs=("$(sort -V "$BIN/kube-versions" | sed '/^$/d' | tail -n 1)")
  fi
  [ ${#specs[@]} -gt 0 ] || die "up: --version is empty"
  VERSIONS=()
  for ((n = 0; n < count; n++)); do
    spec=${specs[n % ${#specs[@]}]}
    full=$(resolve_version "$spec") \
      || die "up: version '$spec' is not built (have: $(tr '\n' ' ' < "$BIN/kube-versions")); see scripts/testbin.sh"
    [ -x "$BIN/kube-apiserver-$full" ] \
      || die "$BIN/kube-apiserver-$full is missing; run scripts/testbin.sh first"
    VERSIONS+=("$full")
  done

  DIR=$(abs_dir "$dir")
  RUN="$DIR/run"
  PKI="$DIR/pki"
  LOGS="$DIR/logs"
  if [ -d "$RUN" ]; then
    local f
    for f in "$RUN"/*.pid; do
      [ -e "$f" ] || continue
      alive "$(<"$f")" "$DIR" && die "$DIR is already up; run: $0 down --dir $DIR"
    done
    cmd_down "$DIR"
  fi
  mkdir -p "$RUN" "$PKI" "$LOGS"
  write_audit_policy
  # `start` reads the flags of `up` (unless FLOTILLA_APISERVER_FLAGS is set then).
  printf '%s\n' "$APISERVER_EXTRA" > "$RUN/apiserver-flags"

  # From here on, a failure stops whatever was started.
  ETCD_PID=""
  PIDS=()
  trap up_exit EXIT
  trap 'exit 130' INT TERM

  if [ -n "$owner" ]; then
    # The watchdog records its own pid (setsid may fork); wait for it, so that `down` finds it.
    # Generous: on a loaded machine starting a shell can take seconds.
    local instance watchdog_deadline=$((SECONDS + 30))
    instance=$(openssl rand -hex 8)
    echo "$instance" > "$RUN/instance"
    setsid nohup "$SELF" _watch --dir "$DIR" --owner-pid "$owner" --instance "$instance" \
      </dev/null >/dev/null 2>&1 &
    while [ ! -s "$RUN/watchdog.pid" ] && [ $SECONDS -lt $watchdog_deadline ]; do
      sleep 0.05
    done
    [ -s "$RUN/watchdog.pid" ] || die "the watchdog did not start within 30s"
  fi

  # Ports for etcd (client, peer) and every apiserver, drawn at once so they are distinct.
  local ports=()
  read -r -a ports <<<"$(free_ports $((count + 2)))"
  # etcd starts while the certificates are generated.
  start_etcd "${ports[0]}" "${ports[1]}"

  local i jobs=() failed=0
  for ((i = 0; i < count; i++)); do
    make_pki "${NAMES[i]}" &
    jobs+=($!)
  done
  for i in "${jobs[@]}"; do wait "$i" || failed=1; done
  [ $failed -eq 0 ] || die "certificate generation failed (openssl)"

  wait_etcd

  PORTS=()
  for ((i = 0; i < count; i++)); do
    : > "$LOGS/${NAMES[i]}.audit.log"
    start_apiserver "$i" "${ports[i + 2]}"
  done

  wait_apiservers 2

  : > "$DIR/clusters.tmp"
  for ((i = 0; i < count; i++)); do
    write_kubeconfig "$i"
    printf '%s %s\n' "${PORTS[i]}" "${VERSIONS[i]}" > "$RUN/${NAMES[i]}.state"
    printf '%s %s %s\n' "${NAMES[i]}" "${VERSIONS[i]}" "$DIR/${NAMES[i]}.kubeconfig" >> "$DIR/clusters.tmp"
  done
  mv "$DIR/clusters.tmp" "$DIR/clusters"
  trap - EXIT INT TERM
  cat "$DIR/clusters"
}

# ------------------------------------------------------------------------------ stop / start

# cluster_state DIR NAME — sets DIR RUN PKI LOGS, NAMES VERSIONS PORTS (one cluster, index 0)
# from what `up` recorded.
cluster_state() {
  DIR=$1
  local name=$2 port version
  RUN="$DIR/run"
  PKI="$DIR/pki"
  LOGS="$DIR/logs"
  if [ ! -s "$RUN/$name.state" ]; then
    [ -s "$DIR/clusters" ] || die "$DIR is not up"
    die "no cluster '$name' in $DIR (have: $(cut -d' ' -f1 "$DIR/clusters" | paste -sd' '))"
  fi
  read -r port version < "$RUN/$name.state"
  NAMES=("$name")
  VERSIONS=("$version")
  PORTS=("$port")
  PIDS=()
}

# running_pid NAME — the pid of NAME's apiserver when it runs.
running_pid() {
  local pid
  [ -s "$RUN/$1.pid" ] || return 1
  pid=$(<"$RUN/$1.pid")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" "$DIR" && printf '%s\n' "$pid"
}

cmd_stop() {
  local name=$2 pid
  cluster_state "$1" "$name"
  if pid=$(running_pid "$name"); then
    stop "$DIR" "$pid"
    alive "$pid" "$DIR" && die "kube-apiserver of $name (pid $pid) did not stop"
    log "$name stopped"
  else
    log "$name is not running"
  fi
  rm -f "$RUN/$name.pid"
}

# start_exit — EXIT trap of a failing `start`: stop the apiserver it started.
start_exit() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    stop "$DIR" "${PIDS[@]+"${PIDS[@]}"}"
    rm -f "$RUN/${NAMES[0]}.pid"
  fi
}

cmd_start() {
  local name=$2 pid
  cluster_state "$1" "$name"
  if running_pid "$name" >/dev/null; then
    log "$name is already running"
    return 0
  fi
  pid=$(cat "$RUN/etcd.pid" 2>/dev/null) || die "$DIR has no etcd; run: $0 up --dir $DIR"
  alive "$pid" "$DIR" || die "etcd of $DIR is not running; run: $0 down --dir $DIR, then up"
  ETCD_URL=$(<"$RUN/etcd.url")
  APISERVER_EXTRA=${FLOTILLA_APISERVER_FLAGS-$(<"$RUN/apiserver-flags")}
  trap start_exit EXIT
  trap 'exit 130' INT TERM
  printf '\n==== local-clusters.sh start, %s ====\n' "$(date -u +%FT%TZ)" >> "$LOGS/$name.log"
  APISERVER_LOG_APPEND=1 start_apiserver 0 "${PORTS[0]}"
  # Same port or nothing: the kubeconfig names it.
  wait_apiservers 0
  trap - EXIT INT TERM
  log "$name started on https://127.0.0.1:${PORTS[0]}"
}

# -------------------------------------------------------------------------------------- main

# Extra apiserver flags that switch off background work tests do not need: API priority and
# fairness, profiling, the endpoint lease reconciler (it also retries etcd writes on shutdown).
# Startup time did not measurably change with or without them. FLOTILLA_APISERVER_FLAGS replaces
# them (word-split), e.g. FLOTILLA_APISERVER_FLAGS="--v=4".
APISERVER_EXTRA=${FLOTILLA_APISERVER_FLAGS-"--enable-priority-and-fairness=false --profiling=false --endpoint-reconciler-type=none"}

main() {
  [ $# -gt 0 ] || usage
  local cmd=$1; shift
  case $cmd in
    up) cmd_up "$@" ;;
    down)
      local dir=""
      while [ $# -gt 0 ]; do
        case $1 in
          --dir) dir=${2:-}; shift 2 ;;
          *) die "down: unknown argument '$1'" ;;
        esac
      done
      [ -n "$dir" ] || die "down: --dir is required"
      cmd_down "$(abs_dir "$dir")"
      ;;
    stop | start)
      local dir="" name=""
      TIMEOUT=120
      while [ $# -gt 0 ]; do
        case $1 in
          --dir) dir=${2:-}; shift 2 ;;
          --name) name=${2:-}; shift 2 ;;
          --timeout) TIMEOUT=${2:-}; shift 2 ;;
          -h | --help) usage ;;
          *) die "$cmd: unknown argument '$1' (see --help)" ;;
        esac
      done
      [ -n "$dir" ] || die "$cmd: --dir is required"
      [ -n "$name" ] || die "$cmd: --name is required"
      [[ $name =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "$cmd: '$name' is not a cluster name"
      [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "$cmd: --timeout must be a positive integer"
      "cmd_$cmd" "$(abs_dir "$dir")" "$name"
      ;;
    _watch)
      local dir="" owner="" instance=""
      while [ $# -gt 0 ]; do
        case $1 in
          --dir) dir=${2:-}; shift 2 ;;
          --owner-pid) owner=${2:-}; shift 2 ;;
          --instance) instance=${2:-}; shift 2 ;;
          *) exit 2 ;;
        esac
      done
      cmd_watch "$dir" "$owner" "$instance"
      ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (up|stop|start|down)" ;;
  esac
}

main "$@"
