#!/usr/bin/env bash
# lab.sh up|down: a local three-node anyedge cluster on loopback.
#
# `up` builds the binaries, writes three configs into lab-run/, starts the
# three edged in the background and waits until node 1 sees all three up.
# `down` stops exactly the processes that `up` started (their PIDs are in
# lab-run/pids) and removes lab-run/.
#
# This is the quick lab. The multi-region lab with network namespaces, BIRD
# routers and SIPp comes later.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run=$root/lab-run
bin=$root/bin
nodes=(1 2 3)
timeout=${LAB_TIMEOUT:-30} # seconds for the cluster to form

admin_url() { echo "http://127.0.0.1:1909$1"; }
cluster_addr() { echo "127.0.0.1:5600$1"; }

say() { echo "lab: $*"; }
die() { echo "lab: $*" >&2; exit 1; }

# is_ours PID: the PID is alive and still one of our edged, not a process
# that reused the number.
is_ours() {
	local cmd
	cmd=$({ tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null) || return 1
	[[ $cmd == "$bin/edged -config $run/"* ]]
}

# stop_all stops the PIDs recorded in lab-run/pids: SIGTERM, a grace period
# for a clean leave, then SIGKILL for any that hang.
stop_all() {
	[ -f "$run/pids" ] || return 0
	local pids=() pid
	while read -r pid; do
		if [ -n "$pid" ] && is_ours "$pid"; then
			pids+=("$pid")
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done <"$run/pids"
	local deadline=$((SECONDS + 10))
	for pid in "${pids[@]}"; do
		while is_ours "$pid" && [ $SECONDS -lt $deadline ]; do
			sleep 0.1
		done
		if is_ours "$pid"; then
			say "pid $pid did not stop in 10s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
}

write_config() {
	local i=$1 key=$2
	{
		echo "# lab node $i, written by scripts/lab.sh"
		echo "log: {level: info, format: text}"
		echo "admin:"
		echo "  listen: 127.0.0.1:1909$i"
		echo "cluster:"
		echo "  node_id: $i"
		echo "  region: lab"
		echo "  listen: $(cluster_addr "$i")"
		if [ "$i" = 1 ]; then
			echo "  seed: true"
		else
			echo "  join: [$(cluster_addr 1)]"
		fi
		echo "  key: \"$key\""
		echo "  tags:"
		echo "    - name: lab-vip"
		echo "      region: lab"
	} >"$run/node$i.yaml"
}

# up_count prints how many nodes node 1 sees up (itself included).
up_count() {
	"$bin/edgectl" -admin "$(admin_url 1)" -timeout 2s cluster nodes -o json 2>/dev/null |
		grep -Eo '"state": *"(up|self)"' | wc -l
}

up() {
	[ ! -f "$run/pids" ] || die "the lab is already up (lab-run/pids exists); run: make lab-down"
	say "building"
	make -s -C "$root" build

	rm -rf "$run"
	mkdir -p "$run"
	chmod 700 "$run" # the configs hold the cluster key

	ok=0
	trap 'on_exit' EXIT
	trap 'exit 130' INT TERM # run the EXIT trap on Ctrl-C too

	local key i
	key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
	for i in "${nodes[@]}"; do
		write_config "$i" "$key"
		"$bin/edged" -config "$run/node$i.yaml" >"$run/node$i.log" 2>&1 </dev/null &
		echo $! >>"$run/pids"
		say "node $i: pid $!, admin $(admin_url "$i"), cluster $(cluster_addr "$i")"
	done

	say "waiting up to ${timeout}s for node 1 to see ${#nodes[@]} nodes up"
	local deadline=$((SECONDS + timeout)) n=0 pid
	while :; do
		n=$(up_count || true)
		[ "$n" -ge "${#nodes[@]}" ] && break
		i=0
		while read -r pid; do
			i=$((i + 1))
			is_ours "$pid" || die "node $i (pid $pid) exited"
		done <"$run/pids"
		[ $SECONDS -lt $deadline ] || die "node 1 sees $n of ${#nodes[@]} nodes up after ${timeout}s"
		sleep 0.2
	done
	ok=1

	echo
	"$bin/edgectl" -admin "$(admin_url 1)" cluster topology
	cat <<EOF

The lab is up: ${#nodes[@]} edged on 127.0.0.1; configs and logs are in lab-run/.
Next:
  bin/edgectl -admin $(admin_url 1) cluster nodes
  bin/edgectl -admin $(admin_url 2) cluster tags
  EDGECTL_ADMIN=$(admin_url 3) bin/edgectl cluster topology -o json
  kill \$(sed -n 3p lab-run/pids)    # stop node 3 and watch node 1 notice
  tail -f lab-run/node1.log
  make lab-down                     # stop the lab
EOF
}

# on_exit cleans up after a failed `up`: it shows the logs, stops what was
# started and removes lab-run/.
on_exit() {
	local rc=$?
	[ "$ok" = 1 ] && return
	local f
	for f in "$run"/node*.log; do
		[ -s "$f" ] || continue
		echo "---- last lines of ${f#"$root"/}" >&2
		tail -n 20 "$f" >&2
	done
	say "up failed; stopping what was started" >&2
	stop_all
	rm -rf "$run"
	exit $((rc == 0 ? 1 : rc))
}

down() {
	if [ ! -d "$run" ]; then
		say "the lab is not up"
		return
	fi
	stop_all
	rm -rf "$run"
	say "down"
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
