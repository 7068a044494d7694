variable "region" {
  description = "The anyedge region name (a key of the topology's regions), used in labels and tags."
  type        = string
}

variable "location" {
  description = "The Vultr location code (for example \"ams\", \"ewr\", \"sgp\")."
  type        = string
}

variable "plan" {
  description = "The Vultr plan of the edge nodes (for example \"vc2-2c-4gb\")."
  type        = string
}

variable "nodes" {
  description = "The region's nodes from the topology module (nodes_by_region[region]): name and id at least."
  type = list(object({
    name = string
    id   = number
  }))
  validation {
    condition     = length(var.nodes) > 0
    error_message = "the region has no nodes."
  }
  validation {
    condition     = length(distinct([for n in var.nodes : n.name])) == length(var.nodes)
    error_message = "node names must be unique."
  }
}

variable "anycast_addresses" {
  description = "Addresses put on lo at first boot (the topology's anycast_addresses[region]); edged serves SIP on them."
  type        = list(string)
}

variable "os_id" {
  description = "The Vultr OS id. Default 2136: Debian 12 x64 (bookworm), what edged is built and tested on."
  type        = number
  default     = 2136
}

variable "ssh_key_ids" {
  description = "Vultr SSH key ids installed for root (Ansible connects with them)."
  type        = list(string)
  default     = []
}

variable "enable_ipv6" {
  description = "Give the nodes IPv6 and peer with Vultr's IPv6 BGP router too."
  type        = bool
  default     = true
}

variable "cluster_port" {
  description = "The cluster protocol's TCP port (the topology's platform.cluster_port)."
  type        = number
  default     = 5600
}

variable "sip_port" {
  description = "The SIP port (UDP and TCP); TLS is sip_port + 1."
  type        = number
  default     = 5060
}

variable "admin_port" {
  description = "The port of edged's admin API (metrics, edgectl), opened to monitoring_cidrs only."
  type        = number
  default     = 9090
}

variable "cluster_peers" {
  description = "Cluster addresses of every node of the platform, by node name (all regions): only they may reach the cluster port. Keys must be known at plan time (node names are); values may be computed."
  type        = map(string)
  default     = {}
}

variable "ssh_cidrs" {
  description = "CIDRs allowed to SSH in (the operators' and the CI runner's addresses)."
  type        = list(string)
  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrhost(c, 0))])
    error_message = "ssh_cidrs must be CIDRs."
  }
}

variable "monitoring_cidrs" {
  description = "CIDRs allowed to scrape the admin API (Prometheus)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.monitoring_cidrs : can(cidrhost(c, 0))])
    error_message = "monitoring_cidrs must be CIDRs."
  }
}

variable "tags" {
  description = "Extra Vultr tags for the instances."
  type        = list(string)
  default     = []
}
