#!/usr/bin/env bash
# Installs what the lab and the end-to-end tests need on Debian 12, as root.
# Idempotent: packages already installed are left alone, and apt-get update
# runs only when something is missing.
set -euo pipefail

packages=(bird2 sip-tester kamailio iproute2 iptables nftables procps psmisc ca-certificates ansible-core ansible-lint yamllint prometheus curl redis-server redis-tools)

die() { echo "install-deps: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (the lab uses network namespaces and installs packages); try: sudo $0"
if ! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
	die "dpkg and apt-get not found: this script supports Debian 12 only"
fi

missing=()
for p in "${packages[@]}"; do
	# dpkg -s also lists removed packages whose config files remain, so check
	# the status too.
	# (Not `dpkg -s | grep -q`: under pipefail grep's early exit makes
	# dpkg die of SIGPIPE, and a long status then reads as "missing".)
	if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
else
	echo "install-deps: all packages present"
fi

# Go is installed by hand (Debian 12 ships an older one); the Makefile adds
# /usr/local/go/bin to PATH, so it only has to be there.
if command -v go >/dev/null; then
	gobin=$(command -v go)
elif [ -x /usr/local/go/bin/go ]; then
	gobin=/usr/local/go/bin/go
else
	die "go not found on PATH or in /usr/local/go/bin: install Go 1.26 from https://go.dev/dl/ into /usr/local/go"
fi
echo "install-deps: using $("$gobin" version) at $gobin"
