output "nodes" {
  description = "Every node, regions in id order: name, region, index in the region, node id, seed flag."
  value       = local.nodes
}

output "node_names" {
  description = "Node names, regions in id order."
  value       = [for n in local.nodes : n.name]
}

output "node_ids" {
  description = "Node id by node name (id = region id * 1000 + index): stable and unique."
  value       = { for n in local.nodes : n.name => n.id }
}

output "nodes_by_region" {
  description = "The nodes of each region, for the provider modules."
  value       = { for k in keys(local.regions) : k => [for n in local.nodes : n if n.region == k] }
}

output "bgp" {
  description = "Per-node BGP settings (the bgp section of edged.yaml, less passwords): asn, router_id, peers, prefixes."
  value       = local.bgp
}

output "anycast_addresses" {
  description = "The addresses each region's nodes configure on lo and serve SIP on."
  value       = local.anycast_addresses
}

output "seed_list" {
  description = "Cluster addresses (host:port) of the seed nodes: the first node of each region (or of the first region only)."
  value       = local.seeds
}

output "tags" {
  description = "Sharing tags with their region, VIPs and per-node-id priorities."
  value       = local.tags
}

output "inventory" {
  description = "The Ansible inventory as an object (all.children.<region>.hosts, plus an edge group of all regions)."
  value       = local.inventory
}

output "inventory_yaml" {
  description = "The Ansible inventory as YAML, ready to write to a file."
  value       = yamlencode(local.inventory)
}
