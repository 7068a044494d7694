// Command terraform-provider-vultr is a stand-in for the Vultr provider
// (registry name vultr/vultr) that serves the schema of the resources the
// anyedge modules use, and nothing else: every create, read, update and
// delete fails. It exists because the real provider cannot be downloaded on
// the machines that run `make test-ops`, while `terraform test` with
// `mock_provider "vultr"` still needs a provider binary for its schema.
//
// The attribute names, types and modes (required, optional, computed) are
// copied from the real provider (vultr/terraform-provider-vultr v2.x,
// resource_vultr_instance.go, resource_vultr_reserved_ip.go,
// resource_vultr_firewall_group.go, resource_vultr_firewall_rule.go), so an
// attribute the modules misspell or misuse fails the tests as it would
// against the real provider. Attributes with a default in the real
// provider are optional and computed here, which is how the plugin
// framework models a provider-side default.
//
// It is built by terraform/test.sh into a filesystem mirror that only the
// tests use; it is never a substitute for the real provider.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
)

// version is the stand-in's version. No real release has it, so a plan
// that picked the stand-in by accident says so in its lock file.
const version = "2.999.0"

func main() {
	debug := flag.Bool("debug", false, "run with support for debuggers")
	flag.Parse()
	err := providerserver.Serve(context.Background(), newProvider, providerserver.ServeOpts{
		Address: "registry.terraform.io/vultr/vultr",
		Debug:   *debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}
