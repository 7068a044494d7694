output "addresses" {
  description = "Each node's public IPv4 address (its reserved IP), by node name."
  value       = { for name, ip in vultr_reserved_ip.node : name => ip.subnet }
}

output "ipv6_addresses" {
  description = "Each node's main IPv6 address, by node name (empty strings without IPv6)."
  value       = { for name, i in vultr_instance.node : name => i.v6_main_ip }
}

output "instance_ids" {
  description = "Vultr instance ids by node name."
  value       = { for name, i in vultr_instance.node : name => i.id }
}

output "firewall_group_id" {
  description = "The region's firewall group."
  value       = vultr_firewall_group.edge.id
}

output "bgp_peers" {
  description = "Vultr's BGP routers as topology router_peers (169.254.169.254 and, with IPv6, 2001:19f0:ffff::1; AS 64515; multihop 2; TCP-MD5)."
  value       = local.bgp_peers
}
