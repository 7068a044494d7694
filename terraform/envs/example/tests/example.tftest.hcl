# terraform test for the example environment: three Vultr regions wired to
# the topology module, against a mock of the Vultr provider, writing the
# Ansible inventory that terraform/test.sh then hands to ansible-inventory.

mock_provider "vultr" {
  mock_resource "vultr_reserved_ip" {
    defaults = { subnet = "192.0.2.10", subnet_size = 32 }
  }
  mock_resource "vultr_instance" {
    defaults = { main_ip = "192.0.2.10", v6_main_ip = "2001:db8:ffff::10" }
  }
}

variables {
  ssh_cidrs        = ["198.51.100.0/24"]
  monitoring_cidrs = ["198.51.100.7/32"]
  inventory_path   = "test-output/inventory.yml"
}

run "three_regions" {
  command = apply

  assert {
    condition     = output.node_ids == { "eu-west-01" = 1001, "eu-west-02" = 1002, "us-east-01" = 2001, "us-east-02" = 2002, "ap-sg-01" = 3001, "ap-sg-02" = 3002 }
    error_message = "two nodes in each of three regions: ${jsonencode(output.node_ids)}"
  }
  assert {
    condition     = length(module.region) == 3 && alltrue([for r in module.region : length(r.instance_ids) == 2])
    error_message = "one region module per region, two instances each"
  }
  assert {
    condition     = keys(yamldecode(output.ansible_inventory).all.children) == ["ap_sg", "edge", "eu_west", "us_east"]
    error_message = "the inventory has a group per region and edge"
  }
  assert {
    condition     = yamldecode(output.ansible_inventory).all.children.us_east.hosts["us-east-02"].ansible_host == "192.0.2.10"
    error_message = "hosts are reached at their reserved IP"
  }
  assert {
    condition     = yamldecode(output.ansible_inventory).all.children.ap_sg.hosts["ap-sg-01"].anyedge_bgp.peers[0].address == "169.254.169.254"
    error_message = "nodes peer with Vultr's BGP router"
  }
  assert {
    condition     = yamldecode(output.ansible_inventory).all.children.ap_sg.hosts["ap-sg-01"].anyedge_bgp.asn == 4200000100
    error_message = "nodes use the platform's ASN"
  }
  assert {
    condition     = length(output.seed_list) == 3
    error_message = "one seed per region"
  }
  assert {
    condition     = length(vultr_firewall_rule.cluster) == 18 && vultr_firewall_rule.cluster["ap-sg/eu-west-02"].firewall_group_id == module.region["ap-sg"].firewall_group_id
    error_message = "each region's firewall lets every node of the platform reach the cluster port"
  }
  assert {
    condition     = jsonencode(module.region["eu-west"].bgp_peers) == jsonencode(yamldecode(output.ansible_inventory).all.children.eu_west.hosts["eu-west-01"].anyedge_bgp.peers)
    error_message = "the inventory's BGP peers are the ones the Vultr region module declares"
  }
  assert {
    condition     = length(terraform_data.inventory) == 1
    error_message = "the inventory is written"
  }
}
