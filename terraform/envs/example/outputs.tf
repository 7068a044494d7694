output "ansible_inventory" {
  description = "The Ansible inventory (YAML): terraform output -raw ansible_inventory > ../../../ansible/inventory/example.yml"
  value       = module.inventory.inventory_yaml
}

output "seed_list" {
  description = "The cluster seeds (host:port)."
  value       = module.inventory.seed_list
}

output "node_ids" {
  description = "Node ids by node name."
  value       = module.topology.node_ids
}

output "addresses" {
  description = "Public IPv4 addresses by node name."
  value       = local.addresses
}
