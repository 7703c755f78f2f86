#!/usr/bin/env bash
# Runs three monitors (a, b, c) on 127.0.0.1:6789-6791 in the foreground, data under
# ./demo-data, logs in demo-data/<name>.log. Ctrl-C stops all three. `make demo` builds the
# binaries first; BIN (default ./bin) and DEMO_DIR (default ./demo-data) override the paths.
set -euo pipefail

BIN=${BIN:-./bin}
DEMO_DIR=${DEMO_DIR:-./demo-data}
NAMES=(a b c)
PORTS=(6789 6790 6791)
METRICS_PORTS=(9283 9284 9285)
MEMBERS=a=127.0.0.1:6789,b=127.0.0.1:6790,c=127.0.0.1:6791
MON_HOST=127.0.0.1:6789,127.0.0.1:6790,127.0.0.1:6791

for b in monitord monctl; do
	[[ -x $BIN/$b ]] || { echo "demo: $BIN/$b is missing: run make build" >&2; exit 1; }
done
mkdir -p "$DEMO_DIR"

pids=()
stop() {
	trap - INT TERM EXIT
	if ((${#pids[@]})); then
		echo
		echo "demo: stopping monitors (pids ${pids[*]})"
		kill -TERM "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
	echo "demo: stopped; data kept in $DEMO_DIR (rm -rf $DEMO_DIR for a fresh cluster)"
}
trap stop EXIT
trap 'exit 130' INT TERM

for i in "${!NAMES[@]}"; do
	n=${NAMES[$i]}
	# --initial-members is read only on the first start; later runs reuse the stores.
	"$BIN/monitord" --name "$n" --data-dir "$DEMO_DIR/$n" --addr "127.0.0.1:${PORTS[$i]}" \
		--initial-members "$MEMBERS" --metrics-addr "127.0.0.1:${METRICS_PORTS[$i]}" \
		--log-format console >>"$DEMO_DIR/$n.log" 2>&1 &
	pids+=($!)
	echo "demo: mon.$n on 127.0.0.1:${PORTS[$i]} (pid $!, metrics http://127.0.0.1:${METRICS_PORTS[$i]}/metrics, log $DEMO_DIR/$n.log)"
done

echo "demo: waiting for all three in quorum..."
status=
for _ in $(seq 1 40); do
	if status=$("$BIN/monctl" -m "$MON_HOST" --timeout 2s status 2>&1) && [[ $status == *HEALTH_OK* ]]; then
		break
	fi
	sleep 0.25
done
echo "$status"
echo

cat <<EOT
Try, in another terminal:

  $BIN/monctl -m $MON_HOST status
  $BIN/monctl -m $MON_HOST config-key set foo bar
  $BIN/monctl -m $MON_HOST config-key get foo
  $BIN/monctl -m $MON_HOST mon stat
  curl -s http://127.0.0.1:${METRICS_PORTS[0]}/readyz
  tail -f $DEMO_DIR/*.log

Kill one monitor (kill ${pids[0]}) and the other two keep serving. Ctrl-C stops the demo.
EOT

# Stay in the foreground until Ctrl-C; a monitor that exits on its own is reported, the others
# keep running. Polling (not `wait -n`) keeps this working with macOS's bash 3.2.
alive=("${!NAMES[@]}")
while ((${#alive[@]})); do
	sleep 1 & wait $! # a wait, so Ctrl-C's trap runs at once
	next=()
	for i in "${alive[@]}"; do
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			next+=("$i")
			continue
		fi
		rc=0
		wait "${pids[$i]}" || rc=$?
		n=${NAMES[$i]}
		echo "demo: mon.$n exited (status $rc); last lines of $DEMO_DIR/$n.log:" >&2
		tail -n 5 "$DEMO_DIR/$n.log" >&2
	done
	alive=("${next[@]+"${next[@]}"}")
done
echo "demo: every monitor has exited" >&2
pids=()
