#!/usr/bin/env bash
# The compose cluster (deploy/docker-compose.yml) under faults, through monctl from the host:
#   1. bring-up: a quorum of 3, a write read back through another monitor
#   2. stop the leader's container: writes continue through the other two
#   3. disconnect one survivor from the network: no quorum, writes refused; reconnect: writes again
#   4. start the stopped monitor: quorum of 3 again, it serves every key written while it was down
#   5. disconnect the current leader (all 3 up): writes continue; reconnect: quorum of 3 again
# Every wait has a deadline; the whole run is bounded by RUN_DEADLINE (default 180 s). Cleans up
# (compose down -v) on every exit and prints the containers' logs when it fails.
#
# Usage: make test-compose   (builds the image, then runs this)
# Env: IMAGE (default minimon:dev), COMPOSE (default: `docker compose` if it works, else
# docker-compose), MONCTL (default bin/monctl), KEEP_LOGS=1 prints the logs on success too.
set -euo pipefail

cd "$(dirname "$0")/../.."
T0=$SECONDS
RUN_DEADLINE=${RUN_DEADLINE:-180}
IMAGE=${IMAGE:-minimon:dev}
MONCTL=${MONCTL:-bin/monctl}
if [[ -z "${COMPOSE:-}" ]]; then
	if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
PROJECT=minimon-test-$$
export MINIMON_IMAGE=$IMAGE MINIMON_CONTAINER_PREFIX=$PROJECT- MINIMON_HOST_IP=127.0.0.1

log() { printf '[%3ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() {
	log "FAIL: $*"
	exit 1
}
compose() { $COMPOSE -f deploy/docker-compose.yml -p "$PROJECT" "$@"; }
ctr() { echo "$PROJECT-mon-$1"; }

status=1
cleanup() {
	local rc=$?
	if [[ $status -ne 0 || -n "${KEEP_LOGS:-}" ]]; then
		for n in a b c; do
			echo "----- logs of $(ctr "$n") (last 60 lines) -----"
			docker logs --tail 60 "$(ctr "$n")" 2>&1 || true
		done
		compose ps 2>&1 || true
	fi
	compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
	if [[ $status -eq 0 ]]; then log "PASS ($COMPOSE, $((SECONDS - T0)) s)"; else log "FAILED (rc $rc)"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -x $MONCTL ]] || fail "$MONCTL missing: run make build"
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "image $IMAGE missing: run make docker"

# check_deadline aborts the whole run once RUN_DEADLINE has passed.
check_deadline() { ((SECONDS - T0 < RUN_DEADLINE)) || fail "run exceeded ${RUN_DEADLINE}s"; }

# port_free PORT: nothing accepts on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# subnet_free PREFIX: no docker network uses PREFIX.0/24.
subnet_free() {
	! docker network inspect $(docker network ls -q) --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null |
		tr ' ' '\n' | grep -qx "$1.0/24"
}

# Pick free host ports and a free /24; retry the bring-up if either was taken meanwhile.
up=0
for attempt in 1 2 3 4 5; do
	base=$((20000 + RANDOM % 40000))
	port_free $base && port_free $((base + 1)) && port_free $((base + 2)) || continue
	prefix=172.30.$((100 + RANDOM % 150))
	subnet_free "$prefix" || continue
	export MINIMON_HOST_PORT_A=$base MINIMON_HOST_PORT_B=$((base + 1)) MINIMON_HOST_PORT_C=$((base + 2))
	export MINIMON_NET_PREFIX=$prefix
	log "compose up: project $PROJECT, host ports $base-$((base + 2)), network $prefix.0/24, $COMPOSE"
	if out=$(compose up -d 2>&1); then
		up=1
		break
	fi
	echo "$out" | tail -5
	compose down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
	log "compose up failed (attempt $attempt), retrying with other ports and subnet"
done
((up)) || fail "compose up failed"

declare -A PORT=([a]=$MINIMON_HOST_PORT_A [b]=$MINIMON_HOST_PORT_B [c]=$MINIMON_HOST_PORT_C)
declare -A IP=([a]=$prefix.11 [b]=$prefix.12 [c]=$prefix.13)
ALL="127.0.0.1:${PORT[a]},127.0.0.1:${PORT[b]},127.0.0.1:${PORT[c]}"
# hosts NAME...: the monctl address list of those monitors.
hosts() {
	local out="" n
	for n in "$@"; do out+="${out:+,}127.0.0.1:${PORT[$n]}"; done
	echo "$out"
}
NETWORK=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(ctr a)")
[[ -n $NETWORK ]] || fail "cannot find the compose network"

# quorum_json HOSTS: quorum-status as JSON, empty when no quorum answers within 2 s.
quorum_json() { "$MONCTL" -m "$1" --timeout 2s -f json quorum-status 2>/dev/null || true; }
leader_of() { sed -n 's/.*"quorum_leader_name":"\([a-z0-9_-]*\)".*/\1/p' <<<"$1"; }
quorum_size() { sed -n 's/.*"quorum_names":\[\([^]]*\)\].*/\1/p' <<<"$1" | tr ',' '\n' | grep -c . || true; }

# wait_quorum N HOSTS SECONDS: until a quorum of at least N answers through HOSTS; prints its JSON.
wait_quorum() {
	local want=$1 hs=$2 deadline=$((SECONDS + $3)) js
	while ((SECONDS < deadline)); do
		check_deadline
		js=$(quorum_json "$hs")
		if [[ -n $js ]] && (($(quorum_size "$js") >= want)); then
			echo "$js"
			return 0
		fi
		sleep 0.3
	done
	return 1
}

# put_until KEY VALUE HOSTS SECONDS: retry a config-key write until it is acknowledged.
put_until() {
	local deadline=$((SECONDS + $4)) start=$SECONDS
	while ((SECONDS < deadline)); do
		check_deadline
		if "$MONCTL" -m "$3" --timeout 2s config-key set "$1" "$2" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	return 1
}

# expect_get KEY VALUE HOSTS: a read through HOSTS returns VALUE.
expect_get() {
	local got
	got=$("$MONCTL" -m "$3" --timeout 5s config-key get "$1") || fail "config-key get $1 through $3 failed"
	[[ $got == "$2" ]] || fail "config-key get $1 through $3: got '$got', want '$2'"
}

disconnect() { docker network disconnect "$NETWORK" "$(ctr "$1")"; }
# reconnect NAME: back on the network with its fixed IP and its service name, as compose made it.
reconnect() { docker network connect --ip "${IP[$1]}" --alias "mon-$1" "$NETWORK" "$(ctr "$1")"; }

# 1. bring-up.
js=$(wait_quorum 3 "$ALL" 60) || fail "no quorum of 3 within 60 s"
leader=$(leader_of "$js")
log "quorum of 3, leader $leader"
put_until test/k1 v1 "$(hosts a)" 10 || fail "write through mon-a refused"
expect_get test/k1 v1 "$(hosts c)"
# Every container runs monctl too (the healthcheck uses it).
docker exec "$(ctr b)" /monctl -m 127.0.0.1:6789 --timeout 5s config-key get test/k1 | grep -qx v1 ||
	fail "monctl inside $(ctr b) cannot read test/k1"
log "write through mon-a read back through mon-c and inside mon-b"

# 2. stop the leader: the other two keep accepting writes.
others=()
for n in a b c; do [[ $n == "$leader" ]] || others+=("$n"); done
t=$SECONDS
docker stop -t 5 "$(ctr "$leader")" >/dev/null
log "stopped the leader mon-$leader"
put_until test/k2 v2 "$(hosts "${others[@]}")" 30 || fail "no write accepted within 30 s after stopping the leader"
log "writes continue through mon-${others[0]} and mon-${others[1]} ($((SECONDS - t)) s after the stop)"
expect_get test/k1 v1 "$(hosts "${others[@]}")"

# 3. partition one survivor: 1 of 3 reachable is no quorum; reconnect restores it.
cut=${others[1]}
keep=${others[0]}
disconnect "$cut"
log "disconnected mon-$cut from $NETWORK"
sleep 2 # let the lease run out (mon_lease 500 ms)
if "$MONCTL" -m "$(hosts "$keep")" --timeout 3s config-key set test/partitioned x >/dev/null 2>&1; then
	fail "a write was accepted by mon-$keep alone (no quorum possible)"
fi
log "mon-$keep alone refuses writes, as it must"
reconnect "$cut"
log "reconnected mon-$cut"
t=$SECONDS
put_until test/k3 v3 "$(hosts "${others[@]}")" 30 || fail "no write within 30 s after reconnecting mon-$cut"
log "writes again ($((SECONDS - t)) s after the reconnect)"

# 4. restart the stopped monitor: it rejoins and has caught up.
t=$SECONDS
docker start "$(ctr "$leader")" >/dev/null
log "started mon-$leader"
js=$(wait_quorum 3 "$ALL" 60) || fail "mon-$leader did not rejoin within 60 s"
log "quorum of 3 again ($((SECONDS - t)) s after the start), leader $(leader_of "$js")"
for kv in test/k1=v1 test/k2=v2 test/k3=v3; do
	got=$(docker exec "$(ctr "$leader")" /monctl -m 127.0.0.1:6789 --timeout 5s config-key get "${kv%%=*}") ||
		fail "mon-$leader cannot serve ${kv%%=*}"
	[[ $got == "${kv#*=}" ]] || fail "mon-$leader: ${kv%%=*} = '$got', want '${kv#*=}'"
done
if docker exec "$(ctr "$leader")" /monctl -m 127.0.0.1:6789 --timeout 5s config-key exists test/partitioned >/dev/null 2>&1; then
	fail "test/partitioned exists: a write refused during the partition was applied"
fi
log "mon-$leader serves k1..k3 written before and while it was down"

# 5. partition the current leader with all three up: the other two elect and go on.
leader=$(leader_of "$js")
others=()
for n in a b c; do [[ $n == "$leader" ]] || others+=("$n"); done
t=$SECONDS
disconnect "$leader"
log "disconnected the leader mon-$leader"
put_until test/k4 v4 "$(hosts "${others[@]}")" 30 || fail "no write within 30 s after cutting off the leader"
log "writes continue through mon-${others[0]} and mon-${others[1]} ($((SECONDS - t)) s after the cut)"
reconnect "$leader"
t=$SECONDS
js=$(wait_quorum 3 "$ALL" 60) || fail "mon-$leader did not rejoin within 60 s of the reconnect"
log "quorum of 3 again ($((SECONDS - t)) s after the reconnect), leader $(leader_of "$js")"
expect_get test/k4 v4 "$(hosts "$leader")"

status=0
