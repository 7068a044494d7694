# An example anyedge platform on Vultr: three regions of two nodes, one
# anycast prefix announced everywhere, and the Ansible inventory written
# for ansible/playbooks. Copy this directory for a real environment.

locals {
  # Vultr's BGP routers, as the vultr-region module's bgp_peers output has
  # them (the test checks both agree). Written here because the topology
  # must be known before the regions are built.
  vultr_bgp_peers = concat(
    [{ address = "169.254.169.254", asn = 64515, multihop = 2, bfd = false, md5 = true }],
    var.enable_ipv6 ? [{ address = "2001:19f0:ffff::1", asn = 64515, multihop = 2, bfd = false, md5 = true }] : [],
  )

  platform = {
    name = var.platform_name
    regions = { for name, r in var.regions : name => {
      id               = r.id
      location         = r.location
      node_count       = r.node_count
      plan             = r.plan
      asn              = var.asn
      router_peers     = local.vultr_bgp_peers
      anycast_prefixes = var.anycast_prefixes
      tags             = r.tags
    } }
  }

  addresses = merge([for r in module.region : r.addresses]...)
}

# The topology before any machine exists: names, ids, anycast addresses.
module "topology" {
  source   = "../../modules/topology"
  platform = local.platform
}

module "region" {
  source   = "../../modules/vultr-region"
  for_each = var.regions

  region            = each.key
  location          = each.value.location
  plan              = each.value.plan
  nodes             = module.topology.nodes_by_region[each.key]
  anycast_addresses = module.topology.anycast_addresses[each.key]
  enable_ipv6       = var.enable_ipv6
  ssh_key_ids       = var.ssh_key_ids
  ssh_cidrs         = var.ssh_cidrs
  monitoring_cidrs  = var.monitoring_cidrs
  cluster_port      = 5600
  # cluster_peers stays empty: the peers of one region are the machines of
  # all regions, which a region module cannot refer to (that would be a
  # cycle). The rules are added below instead.
}

# Every node of the platform may reach every region's cluster port. The keys
# (region and node names) are known at plan time, the addresses are not.
resource "vultr_firewall_rule" "cluster" {
  for_each = { for p in setproduct(keys(var.regions), module.topology.nodes) : "${p[0]}/${p[1].name}" => {
    region = p[0]
    node   = p[1].name
  } }

  firewall_group_id = module.region[each.value.region].firewall_group_id
  ip_type           = "v4"
  protocol          = "tcp"
  subnet            = local.addresses[each.value.node]
  subnet_size       = 32
  port              = "5600"
  notes             = "anyedge cluster from ${each.value.node}"
}

# The same topology with the machines' addresses: the inventory. (One
# module call cannot do both: the regions need the names, the inventory
# needs the regions' addresses.)
module "inventory" {
  source         = "../../modules/topology"
  platform       = local.platform
  node_addresses = local.addresses
}

# Writes the inventory with a local-exec provisioner rather than the local
# provider, so that the environment needs no provider but Vultr's. It runs
# again whenever the inventory changes.
resource "terraform_data" "inventory" {
  count = var.inventory_path == null ? 0 : 1

  triggers_replace = [module.inventory.inventory_yaml, var.inventory_path]

  provisioner "local-exec" {
    command = "mkdir -p \"$(dirname \"$INVENTORY_PATH\")\" && printf '%s' \"$INVENTORY\" > \"$INVENTORY_PATH\""
    environment = {
      INVENTORY      = "# Written by terraform (terraform/envs/example); do not edit.\n---\n${module.inventory.inventory_yaml}"
      INVENTORY_PATH = var.inventory_path
    }
  }
}
