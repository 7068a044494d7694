#!/usr/bin/env bash
# deploy/test-ops.sh: `make test-ops`, the tests of the deployment assets.
#
#   1. Prometheus: promtool check rules, promtool test rules (alerts_test.yml);
#   2. Terraform (terraform/test.sh): fmt, validate, terraform test of the
#      modules and the example environment; it writes the example's
#      Ansible inventory;
#   3. Ansible (ansible/test.sh): lint, syntax, the role for real into a
#      temporary root with that inventory, the playbooks against a local
#      edged;
#   4. internal/deploytest: the dashboard and the rules query only metrics
#      of the code, runbooks exist, edged's /metrics passes promtool.
#
# Needs bin/edged and bin/edgectl (make build) and the tools that make deps
# installs; Terraform or OpenTofu is found or built by scripts/tf.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH=$PATH:/usr/local/go/bin

say() { echo "test-ops: [$(date +%T)] $*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "prometheus rules"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)

say "terraform"
ANYEDGE_TF_OUT=$work/inventory.yml terraform/test.sh

say "ansible"
ANYEDGE_INVENTORY=$work/inventory.yml ANYEDGE_BIN=${ANYEDGE_BIN:-$root/bin} ansible/test.sh

say "deploytest"
go test -count=1 ./internal/deploytest

say "all passed"
