#!/usr/bin/env bash
# ansible/test.sh: the Ansible part of `make test-ops`.
#
#   - yamllint over ansible/ and deploy/, ansible-lint over ansible/;
#   - ansible-playbook --syntax-check of every playbook;
#   - the anyedge role, for real, with connection local into a temporary
#     root (anyedge_prefix) with service management off: run it, run it
#     again and require no change (idempotent), then tests/verify.yml checks
#     the rendered files (edged config check, the inventory's values, the
#     unit's hardening, the sysctls, checksums);
#   - a bad config (a short cluster key) must fail at the validate step and
#     leave the installed config as it was; a binary with the wrong
#     checksum must be refused;
#   - the rendered config, moved to loopback ports, runs a real edged, and
#     playbooks/rolling-upgrade.yml (drain, withdrawal check, role, ready
#     but for the drain, undrain, ready, routes back) and
#     playbooks/maintenance.yml (drain, undrain; refuses a group) run
#     against it.
#
# The inventory is the one terraform/test.sh wrote ($ANYEDGE_INVENTORY),
# else the committed copy in tests/inventory.yml. The binaries are
# $ANYEDGE_BIN/edged and edgectl (default: bin/, from make build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
bin=${ANYEDGE_BIN:-$root/bin}
inventory=${ANYEDGE_INVENTORY:-$here/tests/inventory.yml}

say() { echo "ansible/test.sh: [$(date +%T)] $*"; }
die() { echo "ansible/test.sh: FAIL: $*" >&2; exit 1; }

for tool in ansible-playbook ansible-lint yamllint; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done
for b in edged edgectl; do
	[ -x "$bin/$b" ] || die "$bin/$b not found: run make build, or set ANYEDGE_BIN"
done

export ANSIBLE_CONFIG=$here/ansible.cfg
export ANSIBLE_ROLES_PATH=$here/roles
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
export ANSIBLE_LOCAL_TEMP=${TMPDIR:-/tmp}/anyedge-ansible-tmp
export ANSIBLE_REMOTE_TEMP=$ANSIBLE_LOCAL_TEMP

say "yamllint"
yamllint -s -c "$here/.yamllint" "$here" $([ -d "$root/deploy" ] && echo "$root/deploy")

say "ansible-lint"
(cd "$here" && ansible-lint --offline -q roles/anyedge playbooks tests/role.yml tests/verify.yml)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "syntax check"
for p in "$here"/playbooks/*.yml "$here"/tests/role.yml "$here"/tests/verify.yml; do
	ansible-playbook -i "$inventory" --syntax-check "$p" >"$work/syntax.log" 2>&1 || { cat "$work/syntax.log"; die "syntax check of $p"; }
done

prefix=$work/root
mkdir -p "$prefix"
edged_sum=$(sha256sum "$bin/edged" | cut -d' ' -f1)
edgectl_sum=$(sha256sum "$bin/edgectl" | cut -d' ' -f1)
cat >"$work/release.yml" <<YML
anyedge_prefix: "$prefix"
anyedge_edged_src: "$bin/edged"
anyedge_edged_sha256: "$edged_sum"
anyedge_edgectl_src: "$bin/edgectl"
anyedge_edgectl_sha256: "$edgectl_sum"
YML

play() {
	ansible-playbook -i "$inventory" -e @"$here/tests/test-vars.yml" -e @"$work/release.yml" "$@"
}

say "role into $prefix"
play "$here/tests/role.yml" >"$work/run1.log" 2>&1 || { cat "$work/run1.log"; die "the role failed"; }

say "role again: nothing may change"
play "$here/tests/role.yml" >"$work/run2.log" 2>&1 || { cat "$work/run2.log"; die "the second run failed"; }
grep -q 'changed=0 .*failed=0' "$work/run2.log" || { cat "$work/run2.log"; die "the second run changed something"; }

say "verify the rendered files"
play "$here/tests/verify.yml" >"$work/verify.log" 2>&1 || { cat "$work/verify.log"; die "verification failed"; }

say "a bad config is refused before it is installed"
before=$(sha256sum "$prefix/etc/anyedge/edged.yaml")
if play -e anyedge_cluster_key=short "$here/tests/role.yml" >"$work/bad.log" 2>&1; then
	cat "$work/bad.log"
	die "the role accepted a config that edged config check refuses"
fi
grep -q 'cluster.key: required, at least 16 bytes' "$work/bad.log" || { cat "$work/bad.log"; die "the failure is not edged config check's"; }
[ "$(sha256sum "$prefix/etc/anyedge/edged.yaml")" = "$before" ] || die "the refused config replaced the installed one"

say "a binary with the wrong checksum is refused"
if play -e anyedge_edged_sha256=0000000000000000000000000000000000000000000000000000000000000000 "$here/tests/role.yml" >"$work/sum.log" 2>&1; then
	cat "$work/sum.log"
	die "the role installed a binary with the wrong checksum"
fi
grep -q 'expected 0000' "$work/sum.log" || { cat "$work/sum.log"; die "the failure is not the checksum check"; }

say "rolling upgrade and maintenance against a running edged"
# The rendered config, moved to loopback: the cluster and admin on free
# ports, SIP on any port (the anycast addresses bind with IP_FREEBIND), and
# the node alone as its own seed. The BGP routers of the inventory are not
# there: the sessions stay down, which does not keep a node from being
# ready.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A single node: it is the seed, and joins nobody.
live=(-e "anyedge_admin_listen=127.0.0.1:$port" -e anyedge_cluster_listen=127.0.0.1:0 -e anyedge_sip_port=0
	-e '{"anyedge_cluster_seed": true, "anyedge_cluster_join": []}' 
	-e ansible_become=false -e "anyedge_edgectl_bin=$prefix/usr/local/bin/edgectl")
play "${live[@]}" "$here/tests/role.yml" >"$work/live-role.log" 2>&1 || { cat "$work/live-role.log"; die "the role failed (live config)"; }
"$prefix/usr/local/bin/edged" -config "$prefix/etc/anyedge/edged.yaml" >"$work/edged.log" 2>&1 &
edged_pid=$!
trap 'kill "$edged_pid" 2>/dev/null; wait "$edged_pid" 2>/dev/null; rm -rf "$work"' EXIT
readyz() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true; }
for _ in $(seq 120); do
	[ "$(readyz)" = 200 ] && break
	kill -0 "$edged_pid" 2>/dev/null || { cat "$work/edged.log"; die "edged exited"; }
	sleep 0.5
done
[ "$(readyz)" = 200 ] || { cat "$work/edged.log"; die "edged did not become ready"; }

play "${live[@]}" -e anyedge_upgrade_hosts=eu-west-02 "$here/playbooks/rolling-upgrade.yml" >"$work/upgrade.log" 2>&1 ||
	{ cat "$work/upgrade.log"; die "rolling-upgrade.yml failed"; }
grep -q 'TASK \[Check every route is withdrawn\]' "$work/upgrade.log" || die "the upgrade did not check the withdrawal"
[ "$(readyz)" = 200 ] || die "the node is not ready after the rolling upgrade"

play "${live[@]}" -e node=eu-west-02 -e maintenance=drain "$here/playbooks/maintenance.yml" >"$work/drain.log" 2>&1 ||
	{ cat "$work/drain.log"; die "maintenance.yml drain failed"; }
[ "$(readyz)" = 503 ] || die "the node is not drained after maintenance.yml drain"
play "${live[@]}" -e node=eu-west-02 -e maintenance=undrain "$here/playbooks/maintenance.yml" >"$work/undrain.log" 2>&1 ||
	{ cat "$work/undrain.log"; die "maintenance.yml undrain failed"; }
[ "$(readyz)" = 200 ] || die "the node is not ready after maintenance.yml undrain"
if play "${live[@]}" -e node=edge -e maintenance=drain "$here/playbooks/maintenance.yml" >"$work/many.log" 2>&1; then
	die "maintenance.yml accepted a group of nodes"
fi
[ "$(readyz)" = 200 ] || die "maintenance.yml with a group drained something"

say "ok"
