#!/usr/bin/env bash
# terraform/test.sh: the Terraform part of `make test-ops`.
#
#   - terraform fmt -check over terraform/;
#   - for each module and environment: init, validate, and `terraform test`
#     (real plans and applies; the Vultr provider is mocked);
#   - the inventory that the example environment writes is handed to
#     ansible-inventory, and left in $ANYEDGE_TF_OUT (if set) for the
#     Ansible tests.
#
# The real Vultr provider cannot be downloaded here, and `mock_provider`
# still needs a provider binary for the schema. So the stand-in in
# testprovider/ (schema only) is built, cached by the hash of its sources,
# into a filesystem mirror, and a CLI config that only the tests use sends
# vultr/vultr there. Everything runs on a copy of terraform/ in a temporary
# directory, so no .terraform/, lock file or state lands in the tree.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
tf=$root/scripts/tf.sh
cache=${ANYEDGE_CACHE:-$HOME/.cache/anyedge}
export PATH=$PATH:/usr/local/go/bin

say() { echo "terraform/test.sh: $*"; }

say "using $("$tf" --which)"

# The stand-in provider, at a version no real release has.
version=2.999.0
hash=$(cd "$here/testprovider" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
mirror=$cache/tf-mirror-$hash
plugin_dir=registry.terraform.io/vultr/vultr/$version/linux_amd64
plugin=$mirror/$plugin_dir/terraform-provider-vultr_v$version
if [ ! -x "$plugin" ]; then
	say "building the stand-in Vultr provider into $mirror"
	mkdir -p "$(dirname "$plugin")"
	(cd "$here/testprovider" && go build -trimpath -o "$plugin.tmp" .)
	mv "$plugin.tmp" "$plugin"
fi
# OpenTofu resolves vultr/vultr on its own registry's host name.
tofu_dir=$mirror/${plugin_dir/registry.terraform.io/registry.opentofu.org}
if [ ! -e "$tofu_dir" ]; then
	mkdir -p "$(dirname "$tofu_dir")"
	ln -sfn "$mirror/$plugin_dir" "$tofu_dir"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/cli.tfrc" <<CFG
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/vultr/vultr", "registry.opentofu.org/vultr/vultr"]
  }
  direct {
    exclude = ["registry.terraform.io/vultr/vultr", "registry.opentofu.org/vultr/vultr"]
  }
}
CFG
export TF_CLI_CONFIG_FILE=$work/cli.tfrc TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_INPUT=0

say "fmt -check"
"$tf" fmt -recursive -check -diff "$here"

cp -r "$here" "$work/terraform"
rm -rf "$work/terraform/testprovider"
for dir in modules/topology modules/vultr-region envs/example; do
	say "$dir: init, validate, test"
	(
		cd "$work/terraform/$dir"
		"$tf" init -backend=false -input=false >"$work/init.log" 2>&1 || { cat "$work/init.log"; exit 1; }
		"$tf" validate -no-color
		"$tf" test -no-color
	)
done

inv=$work/terraform/envs/example/test-output/inventory.yml
[ -s "$inv" ] || { say "the example environment wrote no inventory at $inv"; exit 1; }
if command -v ansible-inventory >/dev/null; then
	say "ansible-inventory parses the written inventory"
	hosts=$(ansible-inventory -i "$inv" --graph edge | grep -c -- '--eu-west-\|--us-east-\|--ap-sg-')
	[ "$hosts" = 6 ] || { ansible-inventory -i "$inv" --graph; say "expected 6 hosts under edge, got $hosts"; exit 1; }
fi
if [ -n "${ANYEDGE_TF_OUT:-}" ]; then
	cp "$inv" "$ANYEDGE_TF_OUT"
fi
say "ok"
