# terraform test for the Vultr region module against a mock of the Vultr
# provider (the provider's schema comes from the stand-in in
# terraform/testprovider; terraform/test.sh sets that up).

mock_provider "vultr" {
  mock_resource "vultr_reserved_ip" {
    defaults = { subnet = "192.0.2.10", subnet_size = 32 }
  }
  mock_resource "vultr_instance" {
    defaults = { main_ip = "192.0.2.10", v6_main_ip = "2001:db8:ffff::10" }
  }
}

variables {
  region            = "eu-west"
  location          = "ams"
  plan              = "vc2-2c-4gb"
  nodes             = [{ name = "eu-west-01", id = 1001 }, { name = "eu-west-02", id = 1002 }]
  anycast_addresses = ["203.0.113.1", "2001:db8:100::1"]
  ssh_cidrs         = ["198.51.100.0/24"]
  monitoring_cidrs  = ["198.51.100.7/32"]
  cluster_peers     = { "eu-west-01" = "192.0.2.11", "eu-west-02" = "192.0.2.12", "us-east-01" = "2001:db8:ffff::21" }
}

run "plan_builds_the_region" {
  command = plan

  assert {
    condition     = keys(vultr_instance.node) == ["eu-west-01", "eu-west-02"] && keys(vultr_reserved_ip.node) == ["eu-west-01", "eu-west-02"]
    error_message = "one instance and one reserved IP per node"
  }
  assert {
    condition     = vultr_instance.node["eu-west-02"].hostname == "eu-west-02" && vultr_instance.node["eu-west-02"].region == "ams" && vultr_instance.node["eu-west-02"].os_id == 2136
    error_message = "instances are named after their node, in the region's location, on Debian 12"
  }
  assert {
    condition     = vultr_reserved_ip.node["eu-west-01"].region == "ams" && vultr_reserved_ip.node["eu-west-01"].ip_type == "v4"
    error_message = "reserved IPv4 addresses in the instances' location"
  }
  assert {
    condition     = yamldecode(vultr_instance.node["eu-west-01"].user_data).hostname == "eu-west-01"
    error_message = "user data is valid YAML (cloud-config) for the node"
  }
  assert {
    condition     = startswith(vultr_instance.node["eu-west-01"].user_data, "#cloud-config\n")
    error_message = "user data starts with #cloud-config"
  }
  assert {
    condition = alltrue([for l in [
      "net.ipv4.conf.all.arp_ignore = 1",
      "net.ipv4.conf.all.arp_announce = 2",
      "net.ipv4.conf.all.rp_filter = 2",
      "net.ipv4.ip_nonlocal_bind = 1",
      "ExecStart=/sbin/ip address replace 203.0.113.1/32 dev lo",
      "ExecStart=/sbin/ip address replace 2001:db8:100::1/128 dev lo",
    ] : strcontains(vultr_instance.node["eu-west-01"].user_data, l)])
    error_message = "user data sets the anycast sysctls and puts the anycast addresses on lo:\n${vultr_instance.node["eu-west-01"].user_data}"
  }
  assert {
    condition = alltrue([for k in ["sip-udp-v4", "sip-tcp-v4", "sip-udp-v6", "sip-tcp-v6", "icmp-v4", "ssh-198.51.100.0/24", "admin-198.51.100.7/32",
    "cluster-eu-west-01", "cluster-eu-west-02", "cluster-us-east-01"] : contains(keys(vultr_firewall_rule.rule), k)])
    error_message = "firewall rules for SIP, ICMP, SSH, the admin API and every cluster peer: ${jsonencode(keys(vultr_firewall_rule.rule))}"
  }
  assert {
    condition = (vultr_firewall_rule.rule["cluster-us-east-01"].ip_type == "v6" && vultr_firewall_rule.rule["cluster-us-east-01"].subnet_size == 128 &&
    vultr_firewall_rule.rule["cluster-eu-west-02"].subnet == "192.0.2.12" && vultr_firewall_rule.rule["cluster-eu-west-02"].port == "5600")
    error_message = "the cluster port is open to each peer's single address"
  }
  assert {
    condition     = vultr_firewall_rule.rule["sip-tcp-v4"].port == "5060:5061" && vultr_firewall_rule.rule["sip-udp-v4"].subnet_size == 0
    error_message = "SIP (UDP 5060, TCP 5060-5061) is open to the world"
  }
  assert {
    condition     = vultr_firewall_rule.rule["admin-198.51.100.7/32"].port == "9090" && vultr_firewall_rule.rule["ssh-198.51.100.0/24"].subnet_size == 24
    error_message = "SSH and the admin API only from the given CIDRs"
  }
  assert {
    condition = jsonencode(output.bgp_peers) == jsonencode([
      { address = "169.254.169.254", asn = 64515, multihop = 2, bfd = false, md5 = true },
      { address = "2001:19f0:ffff::1", asn = 64515, multihop = 2, bfd = false, md5 = true },
    ])
    error_message = "Vultr's BGP routers, AS 64515, multihop 2, with a password: ${jsonencode(output.bgp_peers)}"
  }
}

run "apply_wires_reserved_ips_and_firewall" {
  command = apply

  assert {
    condition     = vultr_instance.node["eu-west-01"].reserved_ip_id == vultr_reserved_ip.node["eu-west-01"].id
    error_message = "each instance gets its own reserved IP as main address"
  }
  assert {
    condition     = alltrue([for i in vultr_instance.node : i.firewall_group_id == vultr_firewall_group.edge.id])
    error_message = "every instance is in the region's firewall group"
  }
  assert {
    condition     = alltrue([for r in vultr_firewall_rule.rule : r.firewall_group_id == vultr_firewall_group.edge.id])
    error_message = "every rule is in the region's firewall group"
  }
  assert {
    condition     = output.addresses == { "eu-west-01" = "192.0.2.10", "eu-west-02" = "192.0.2.10" }
    error_message = "addresses are the reserved IPs: ${jsonencode(output.addresses)}"
  }
}

run "ipv4_only" {
  command = plan
  variables {
    enable_ipv6 = false
  }
  assert {
    condition     = length(output.bgp_peers) == 1 && !contains(keys(vultr_firewall_rule.rule), "sip-udp-v6")
    error_message = "without IPv6 there is no IPv6 peer and no IPv6 world rules"
  }
}

run "region_without_nodes" {
  command = plan
  variables {
    nodes = []
  }
  expect_failures = [var.nodes]
}

run "bad_ssh_cidr" {
  command = plan
  variables {
    ssh_cidrs = ["198.51.100.7"]
  }
  expect_failures = [var.ssh_cidrs]
}
