# terraform test for the topology module: a real plan and apply (the module
# needs no provider), then one failing plan per kind of bad input.

run "base" {
  command = apply
  module {
    source = "./tests/base"
  }
}

run "valid_platform_applies" {
  command = apply
  variables {
    platform       = run.base.platform
    node_addresses = run.base.node_addresses
  }

  assert {
    condition     = output.node_names == ["eu-west-01", "eu-west-02", "us-east-01", "us-east-02", "us-east-03", "ap-south-01"]
    error_message = "nodes are listed regions in id order, then by index: ${jsonencode(output.node_names)}"
  }
  assert {
    condition     = output.node_ids == { "eu-west-01" = 1001, "eu-west-02" = 1002, "us-east-01" = 2001, "us-east-02" = 2002, "us-east-03" = 2003, "ap-south-01" = 7001 }
    error_message = "node ids are region id * 1000 + index: ${jsonencode(output.node_ids)}"
  }
  assert {
    condition     = length(distinct(values(output.node_ids))) == 6
    error_message = "node ids are unique"
  }
  assert {
    condition     = output.seed_list == ["192.0.2.11:5600", "[2001:db8:ffff::1]:5600", "ap-south-01:5600"]
    error_message = "one seed per region, by address when known (IPv6 bracketed), else by name: ${jsonencode(output.seed_list)}"
  }
  assert {
    condition     = output.bgp["us-east-02"].router_id == "0.0.7.210" && output.bgp["ap-south-01"].router_id == "0.0.27.89"
    error_message = "the router id is the node id as an IPv4 address: ${output.bgp["us-east-02"].router_id}"
  }
  assert {
    condition = jsonencode(output.bgp["eu-west-01"]) == jsonencode({
      asn       = 4200000001
      router_id = "0.0.3.233"
      peers     = [{ address = "169.254.169.254", asn = 64515, multihop = 2, bfd = false, md5 = true }]
      prefixes  = [{ prefix = "203.0.113.0/24" }, { prefix = "2001:db8:100::/48" }]
    })
    error_message = "per-node BGP settings: ${jsonencode(output.bgp["eu-west-01"])}"
  }
  assert {
    condition     = jsonencode(output.anycast_addresses) == jsonencode({ "eu-west" = ["203.0.113.1", "2001:db8:100::1"], "us-east" = ["203.0.113.1"], "ap-south" = ["203.0.113.10"] })
    error_message = "anycast addresses default to the first address of each prefix: ${jsonencode(output.anycast_addresses)}"
  }
  assert {
    condition     = keys(output.inventory.all.children) == ["ap_south", "edge", "eu_west", "us_east"]
    error_message = "one inventory group per region, plus edge: ${jsonencode(keys(output.inventory.all.children))}"
  }
  assert {
    condition     = keys(output.inventory.all.children.edge.children) == ["ap_south", "eu_west", "us_east"]
    error_message = "the edge group holds every region"
  }
  assert {
    condition     = keys(output.inventory.all.children.us_east.hosts) == ["us-east-01", "us-east-02", "us-east-03"]
    error_message = "region groups hold their nodes"
  }
  assert {
    condition = jsonencode(output.inventory.all.children.eu_west.hosts["eu-west-02"]) == jsonencode({
      ansible_host              = "192.0.2.12"
      anyedge_node_id           = 1002
      anyedge_region            = "eu-west"
      anyedge_cluster_listen    = "192.0.2.12:5600"
      anyedge_cluster_advertise = "192.0.2.12:5600"
      anyedge_cluster_seed      = false
      anyedge_cluster_join      = ["192.0.2.11:5600", "[2001:db8:ffff::1]:5600", "ap-south-01:5600"]
      anyedge_sip_port          = 5060
      anyedge_sip_address       = "192.0.2.12"
      anyedge_anycast_addresses = ["203.0.113.1", "2001:db8:100::1"]
      anyedge_bgp               = output.bgp["eu-west-02"]
    })
    error_message = "host vars of eu-west-02: ${jsonencode(output.inventory.all.children.eu_west.hosts["eu-west-02"])}"
  }
  assert {
    condition     = output.inventory.all.children.ap_south.hosts["ap-south-01"].anyedge_cluster_listen == "0.0.0.0:5600" && !contains(keys(output.inventory.all.children.ap_south.hosts["ap-south-01"]), "ansible_host")
    error_message = "a node without a known address listens on every address and has no ansible_host"
  }
  assert {
    condition     = output.inventory.all.children.eu_west.hosts["eu-west-01"].anyedge_cluster_join == ["[2001:db8:ffff::1]:5600", "ap-south-01:5600"]
    error_message = "a seed joins the other seeds, not itself"
  }
  assert {
    condition = jsonencode(output.inventory.all.vars.anyedge_cluster_tags) == jsonencode([
      { name = "vip-eu", region = "eu-west", priorities = { "1002" = 200 } },
      { name = "vip-us", region = "us-east", priorities = {} },
    ])
    error_message = "every node knows every tag, priorities by node id: ${jsonencode(output.inventory.all.vars.anyedge_cluster_tags)}"
  }
  assert {
    condition     = jsonencode(yamldecode(output.inventory_yaml)) == jsonencode(output.inventory)
    error_message = "inventory_yaml is the inventory as YAML"
  }
}

run "single_seed_when_asked" {
  command = plan
  variables {
    platform       = merge(run.base.platform, { seed_per_region = false })
    node_addresses = run.base.node_addresses
  }
  assert {
    condition     = output.seed_list == ["192.0.2.11:5600"]
    error_message = "only the first node of the first region is a seed: ${jsonencode(output.seed_list)}"
  }
}

# Bad inputs: each must fail the plan on the check that names it.

run "overlapping_prefixes_in_a_region" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      eu-west = merge(run.base.platform.regions["eu-west"], { anycast_prefixes = ["203.0.113.0/24", "203.0.113.128/25"] })
    }) })
  }
  expect_failures = [terraform_data.checks]
}

run "nested_prefixes_across_regions" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      ap-south = merge(run.base.platform.regions["ap-south"], { anycast_prefixes = ["203.0.112.0/23"], anycast_addresses = null })
    }) })
  }
  expect_failures = [terraform_data.checks]
}

run "vip_inside_anycast_prefix" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      us-east = merge(run.base.platform.regions["us-east"], { tags = [{ name = "vip-us", vips = ["203.0.113.99"] }] })
    }) })
  }
  expect_failures = [terraform_data.checks]
}

run "duplicate_vip" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      us-east = merge(run.base.platform.regions["us-east"], { tags = [{ name = "vip-us", vips = ["198.51.100.10"] }] })
    }) })
  }
  expect_failures = [terraform_data.checks]
}

run "duplicate_node_ids" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      ap-south = merge(run.base.platform.regions["ap-south"], { id = 2 })
    }) })
  }
  expect_failures = [terraform_data.checks]
}

run "duplicate_tag_names" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      us-east = merge(run.base.platform.regions["us-east"], { tags = [{ name = "vip-eu", vips = [] }] })
    }) })
  }
  expect_failures = [terraform_data.checks]
}

run "as_trans_is_refused" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      eu-west = merge(run.base.platform.regions["eu-west"], { asn = 23456 })
    }) })
  }
  expect_failures = [var.platform]
}

run "asn_out_of_range" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      eu-west = merge(run.base.platform.regions["eu-west"], { asn = 4294967296 })
    }) })
  }
  expect_failures = [var.platform]
}

run "bad_peer_asn" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      ap-south = merge(run.base.platform.regions["ap-south"], { router_peers = [{ address = "192.0.2.1", asn = 0 }] })
    }) })
  }
  expect_failures = [var.platform]
}

run "empty_region" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      us-east = merge(run.base.platform.regions["us-east"], { node_count = 0 })
    }) })
  }
  expect_failures = [var.platform]
}

run "region_without_prefixes" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      us-east = merge(run.base.platform.regions["us-east"], { anycast_prefixes = [] })
    }) })
  }
  expect_failures = [var.platform]
}

run "prefix_with_host_bits" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = merge(run.base.platform.regions, {
      us-east = merge(run.base.platform.regions["us-east"], { anycast_prefixes = ["203.0.113.1/24"] })
    }) })
  }
  expect_failures = [var.platform]
}

run "bad_region_name" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = { "EU_West" = run.base.platform.regions["eu-west"] } })
  }
  expect_failures = [var.platform]
}

run "no_regions" {
  command = plan
  variables {
    platform = merge(run.base.platform, { regions = {} })
  }
  expect_failures = [var.platform]
}
