package main

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	pschema "github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

type vultrProvider struct{}

func newProvider() provider.Provider { return vultrProvider{} }

func (vultrProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "vultr"
	resp.Version = version
}

// Schema is the real provider's configuration: the API key (VULTR_API_KEY
// in the environment otherwise), and the client's rate and retry limits.
func (vultrProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = pschema.Schema{
		Description: "Stand-in for the Vultr provider: schema only, for terraform test with mock_provider.",
		Attributes: map[string]pschema.Attribute{
			"api_key":     pschema.StringAttribute{Optional: true, Sensitive: true},
			"rate_limit":  pschema.Int64Attribute{Optional: true},
			"retry_limit": pschema.Int64Attribute{Optional: true},
		},
	}
}

func (vultrProvider) Configure(_ context.Context, _ provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	resp.Diagnostics.AddWarning("stand-in Vultr provider",
		"This is the schema-only stand-in built for the anyedge tests; it cannot manage real resources.")
}

func (vultrProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		standIn("instance", instanceSchema()),
		standIn("reserved_ip", reservedIPSchema()),
		standIn("firewall_group", firewallGroupSchema()),
		standIn("firewall_rule", firewallRuleSchema()),
	}
}

func (vultrProvider) DataSources(context.Context) []func() datasource.DataSource { return nil }

// standInResource has a real schema and refuses to do anything.
type standInResource struct {
	name   string
	schema schema.Schema
}

func standIn(name string, s schema.Schema) func() resource.Resource {
	return func() resource.Resource { return &standInResource{name: name, schema: s} }
}

func (r *standInResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_" + r.name
}

func (r *standInResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = r.schema
}

const refusal = "The stand-in Vultr provider only serves the schema for terraform test with mock_provider; install the real vultr/vultr provider to manage resources."

func (r *standInResource) Create(_ context.Context, _ resource.CreateRequest, resp *resource.CreateResponse) {
	resp.Diagnostics.AddError("stand-in provider", refusal)
}

func (r *standInResource) Read(_ context.Context, _ resource.ReadRequest, resp *resource.ReadResponse) {
	resp.Diagnostics.AddError("stand-in provider", refusal)
}

func (r *standInResource) Update(_ context.Context, _ resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("stand-in provider", refusal)
}

func (r *standInResource) Delete(_ context.Context, _ resource.DeleteRequest, resp *resource.DeleteResponse) {
	resp.Diagnostics.AddError("stand-in provider", refusal)
}

// Attribute shorthands, by mode.
func reqStr() schema.StringAttribute  { return schema.StringAttribute{Required: true} }
func optStr() schema.StringAttribute  { return schema.StringAttribute{Optional: true} }
func ocStr() schema.StringAttribute   { return schema.StringAttribute{Optional: true, Computed: true} }
func compStr() schema.StringAttribute { return schema.StringAttribute{Computed: true} }
func reqInt() schema.Int64Attribute   { return schema.Int64Attribute{Required: true} }
func ocInt() schema.Int64Attribute    { return schema.Int64Attribute{Optional: true, Computed: true} }
func compInt() schema.Int64Attribute  { return schema.Int64Attribute{Computed: true} }
func optBool() schema.BoolAttribute   { return schema.BoolAttribute{Optional: true} }
func ocBool() schema.BoolAttribute    { return schema.BoolAttribute{Optional: true, Computed: true} }
func id() schema.StringAttribute      { return schema.StringAttribute{Computed: true} }

func instanceSchema() schema.Schema {
	return schema.Schema{
		Attributes: map[string]schema.Attribute{
			"id": id(),
			// Required.
			"region": reqStr(),
			"plan":   reqStr(),
			// Optional.
			"iso_id":              ocStr(), // default ""
			"app_id":              ocInt(),
			"image_id":            ocStr(),
			"os_id":               ocInt(),
			"script_id":           ocStr(),
			"enable_ipv6":         optBool(),
			"disable_public_ipv4": optBool(),
			"vpc_ids":             schema.SetAttribute{ElementType: types.StringType, Optional: true, Computed: true},
			"vpc2_ids":            schema.SetAttribute{ElementType: types.StringType, Optional: true},
			"label":               ocStr(),
			"ssh_key_ids":         schema.ListAttribute{ElementType: types.StringType, Optional: true},
			"snapshot_id":         ocStr(),
			"user_data":           ocStr(),
			"activation_email":    optBool(),
			"ddos_protection":     ocBool(), // default false
			"hostname":            ocStr(),
			"tags":                schema.SetAttribute{ElementType: types.StringType, Optional: true},
			"reserved_ip_id":      ocStr(),
			"firewall_group_id":   ocStr(),
			"backups":             ocStr(), // default "disabled"
			"user_scheme":         optStr(),
			"app_variables":       schema.MapAttribute{ElementType: types.StringType, Optional: true},
			// Computed.
			"os":                compStr(),
			"ram":               compInt(),
			"disk":              compInt(),
			"main_ip":           compStr(),
			"vcpu_count":        compInt(),
			"default_password":  schema.StringAttribute{Computed: true, Sensitive: true},
			"date_created":      compStr(),
			"status":            compStr(),
			"allowed_bandwidth": compInt(),
			"netmask_v4":        compStr(),
			"gateway_v4":        compStr(),
			"power_status":      compStr(),
			"server_status":     compStr(),
			"v6_network":        compStr(),
			"v6_main_ip":        compStr(),
			"v6_network_size":   compInt(),
			"internal_ip":       compStr(),
			"kvm":               compStr(),
			"features":          schema.ListAttribute{ElementType: types.StringType, Computed: true},
		},
		Blocks: map[string]schema.Block{
			"backups_schedule": schema.ListNestedBlock{
				NestedObject: schema.NestedBlockObject{
					Attributes: map[string]schema.Attribute{
						"type": reqStr(),
						"hour": ocInt(),
						"dow":  ocInt(),
						"dom":  ocInt(),
					},
				},
			},
		},
	}
}

func reservedIPSchema() schema.Schema {
	return schema.Schema{
		Attributes: map[string]schema.Attribute{
			"id":          id(),
			"region":      reqStr(),
			"ip_type":     reqStr(), // "v4" or "v6"
			"label":       ocStr(),  // default ""
			"instance_id": ocStr(),  // default ""
			"subnet":      compStr(),
			"subnet_size": compInt(),
		},
	}
}

func firewallGroupSchema() schema.Schema {
	return schema.Schema{
		Attributes: map[string]schema.Attribute{
			"id":             id(),
			"description":    ocStr(), // default ""
			"date_created":   compStr(),
			"date_modified":  compStr(),
			"instance_count": compInt(),
			"rule_count":     compInt(),
			"max_rule_count": compInt(),
		},
	}
}

func firewallRuleSchema() schema.Schema {
	return schema.Schema{
		Attributes: map[string]schema.Attribute{
			"id":                id(),
			"firewall_group_id": reqStr(),
			"ip_type":           reqStr(), // "v4" or "v6"
			"protocol":          reqStr(), // icmp, tcp, udp, gre, ah, esp
			"subnet":            reqStr(),
			"subnet_size":       reqInt(),
			"port":              ocStr(), // default ""
			"source":            ocStr(), // "" or "cloudflare"
			"notes":             ocStr(), // default ""
		},
	}
}
