#!/usr/bin/env bash
# tf.sh ARGS...: runs Terraform, or OpenTofu where Terraform is missing, with
# ARGS. The terraform/ code and tests work with either.
#
# Choice, first match wins:
#   1. $ANYEDGE_TF, a binary to use (for example ANYEDGE_TF=tofu to test
#      with OpenTofu on a machine that has both);
#   2. terraform on PATH;
#   3. tofu on PATH;
#   4. OpenTofu $TOFU_VERSION built from source with the Go toolchain, once,
#      into $ANYEDGE_CACHE/bin (default ~/.cache/anyedge/bin, outside the
#      repository). Neither Terraform nor OpenTofu releases can be
#      downloaded on our machines, but the Go module proxy serves
#      OpenTofu's source. `go install ...@version` refuses it (its go.mod
#      has a replace directive), so the module is downloaded and built as
#      the main module. The build takes several minutes on two cores.
#
# `tf.sh --which` prints the binary it would run (building it if needed).
set -euo pipefail

TOFU_VERSION=v1.12.6 # builds with Go 1.26
cache=${ANYEDGE_CACHE:-$HOME/.cache/anyedge}

die() { echo "tf.sh: $*" >&2; exit 1; }

build_tofu() {
	local out=$1 dir
	command -v go >/dev/null || die "neither terraform nor tofu found, and no go to build OpenTofu with"
	echo "tf.sh: no terraform or tofu on PATH; building OpenTofu $TOFU_VERSION into $out (once; takes minutes)" >&2
	dir=$(go mod download -json "github.com/opentofu/opentofu@$TOFU_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || die "could not download github.com/opentofu/opentofu@$TOFU_VERSION from the Go module proxy"
	mkdir -p "$(dirname "$out")"
	(cd "$dir" && GOFLAGS=-mod=readonly go build -trimpath -o "$out.tmp" ./cmd/tofu) ||
		die "building OpenTofu $TOFU_VERSION failed"
	mv "$out.tmp" "$out"
}

pick() {
	if [ -n "${ANYEDGE_TF:-}" ]; then
		command -v "$ANYEDGE_TF" || die "ANYEDGE_TF=$ANYEDGE_TF not found"
	elif command -v terraform >/dev/null; then
		command -v terraform
	elif command -v tofu >/dev/null; then
		command -v tofu
	else
		local tofu=$cache/bin/tofu-$TOFU_VERSION
		[ -x "$tofu" ] || build_tofu "$tofu"
		echo "$tofu"
	fi
}

bin=$(pick)
if [ "${1:-}" = "--which" ]; then
	echo "$bin"
	exit 0
fi
exec "$bin" "$@"
