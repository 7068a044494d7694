#!/usr/bin/env bash
# lab.sh up [--regions 2|3] | up --local | status | down
#
# up (default): the anyedge lab in network namespaces (package lab, run by
#   bin/edgelab): two regions (LAB_REGIONS=3 or --regions 3 for three),
#   each with a BIRD 2 router, two edged and a SIPp client; the routers
#   peer across a WAN. It registers a few users to the anycast address
#   203.0.113.10 (and one per region over IPv6 to 2001:db8:a::10, which
#   the edges announce on separate IPv6 BGP sessions), places a test
#   call, prints a summary and what to type
#   next, and leaves the lab running. Needs root; installs BIRD and SIPp
#   if missing (scripts/install-deps.sh). If anything fails, everything it
#   built is removed.
# up --local: the quick lab: three edged on loopback (cluster only, no
#   root needed).
# status: the summary again.
# down: stops exactly the processes `up` started (by the PIDs it recorded)
#   and removes every namespace and lab-run/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run=$root/lab-run
bin=$root/bin
export PATH=$PATH:/usr/local/go/bin

say() { echo "lab: $*"; }
die() { echo "lab: $*" >&2; exit 1; }

# ---- the namespace lab -------------------------------------------------

build_edgelab() {
	make -s -C "$root" build
	(cd "$root" && go build -o "$bin/edgelab" ./lab/cmd/edgelab)
}

ns_up() {
	local regions=${LAB_REGIONS:-2}
	while [ $# -gt 0 ]; do
		case $1 in
		--regions) regions=$2; shift 2 ;;
		--regions=*) regions=${1#*=}; shift ;;
		*) die "unknown option $1" ;;
		esac
	done
	[ "$(id -u)" -eq 0 ] || die "the namespace lab needs root (network namespaces, BIRD); try: sudo make lab (or scripts/lab.sh up --local for the loopback cluster)"
	[ ! -f "$run/state.json" ] && [ ! -f "$run/pids" ] || die "a lab is already up (lab-run/ exists); run: make lab-down"
	"$root/scripts/install-deps.sh" >/dev/null
	say "building"
	build_edgelab
	cd "$root"
	exec "$bin/edgelab" up -dir "$run" -bin "$bin" -scenarios "$root/edge/sipp" -regions "$regions"
}

ns_down() {
	if [ ! -x "$bin/edgelab" ]; then
		build_edgelab
	fi
	"$bin/edgelab" down -dir "$run"
}

# ---- the loopback lab (--local) ----------------------------------------

nodes=(1 2 3)
timeout=${LAB_TIMEOUT:-30} # seconds for the cluster to form

admin_url() { echo "http://127.0.0.1:1909$1"; }
cluster_addr() { echo "127.0.0.1:5600$1"; }

# is_ours PID: the PID is alive and still one of our edged, not a process
# that reused the number.
is_ours() {
	local cmd
	cmd=$({ tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null) || return 1
	[[ $cmd == "$bin/edged -config $run/"* ]]
}

# stop_local stops the PIDs recorded in lab-run/pids: SIGTERM, a grace
# period for a clean leave, then SIGKILL for any that hang.
stop_local() {
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

local_up() {
	[ ! -f "$run/pids" ] && [ ! -f "$run/state.json" ] || die "a lab is already up (lab-run/ exists); run: make lab-down"
	say "building"
	make -s -C "$root" build

	rm -rf "$run"
	mkdir -p "$run"
	chmod 700 "$run" # the configs hold the cluster key

	ok=0
	trap 'on_local_exit' EXIT
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

The local lab is up: ${#nodes[@]} edged on 127.0.0.1; configs and logs are in lab-run/.
Next:
  bin/edgectl -admin $(admin_url 1) cluster nodes
  bin/edgectl -admin $(admin_url 2) cluster tags
  EDGECTL_ADMIN=$(admin_url 3) bin/edgectl cluster topology -o json
  kill \$(sed -n 3p lab-run/pids)    # stop node 3 and watch node 1 notice
  tail -f lab-run/node1.log
  make lab-down                     # stop the lab
EOF
}

# on_local_exit cleans up after a failed local `up`: it shows the logs,
# stops what was started and removes lab-run/.
on_local_exit() {
	local rc=$?
	[ "$ok" = 1 ] && return
	local f
	for f in "$run"/node*.log; do
		[ -s "$f" ] || continue
		echo "---- last lines of ${f#"$root"/}" >&2
		tail -n 20 "$f" >&2
	done
	say "up failed; stopping what was started" >&2
	stop_local
	rm -rf "$run"
	exit $((rc == 0 ? 1 : rc))
}

# ---- dispatch ----------------------------------------------------------

down() {
	if [ -f "$run/pids" ]; then
		stop_local
		rm -rf "$run"
		say "down"
		return
	fi
	if [ -f "$run/state.json" ]; then
		ns_down
		return
	fi
	# No record: a namespace lab whose state was lost still gets its
	# namespaces removed (edgelab down sweeps anylab-*).
	if [ "$(id -u)" -eq 0 ] && ip netns list 2>/dev/null | grep -q '^anylab-'; then
		ns_down
		return
	fi
	rm -rf "$run"
	say "the lab is not up"
}

case "${1:-}" in
up)
	shift
	if [ "${1:-}" = --local ]; then
		local_up
	else
		ns_up "$@"
	fi
	;;
status)
	[ -f "$run/state.json" ] || die "no namespace lab is up"
	"$bin/edgelab" status -dir "$run"
	;;
down) down ;;
*)
	echo "usage: $0 up [--regions 2|3] | up --local | status | down" >&2
	exit 2
	;;
esac
