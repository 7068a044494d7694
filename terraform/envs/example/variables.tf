variable "platform_name" {
  description = "The platform's name (a DNS label)."
  type        = string
  default     = "anyedge"
}

variable "asn" {
  description = "The platform's AS number: the one Vultr accepted when enabling BGP on the account (a private ASN by default)."
  type        = number
  default     = 4200000100
}

variable "anycast_prefixes" {
  description = "The anycast prefixes every region announces (at least a /24 for IPv4, a /48 for IPv6, or upstreams filter them). The default is a documentation prefix: replace it with yours."
  type        = list(string)
  default     = ["203.0.113.0/24"]
}

variable "regions" {
  description = "The regions: anyedge region name => Vultr location, node count, plan, stable region id, sharing tags with VIPs."
  type = map(object({
    id         = number
    location   = string
    node_count = number
    plan       = optional(string, "vc2-2c-4gb")
    tags = optional(list(object({
      name     = string
      vips     = optional(list(string), [])
      priority = optional(map(number), {})
    })), [])
  }))
  default = {
    eu-west = { id = 1, location = "ams", node_count = 2, tags = [{ name = "eu-west-ha" }] }
    us-east = { id = 2, location = "ewr", node_count = 2, tags = [{ name = "us-east-ha" }] }
    ap-sg   = { id = 3, location = "sgp", node_count = 2, tags = [{ name = "ap-sg-ha" }] }
  }
}

variable "enable_ipv6" {
  description = "IPv6 on the nodes, and BGP with Vultr's IPv6 router."
  type        = bool
  default     = true
}

variable "ssh_key_ids" {
  description = "Vultr SSH key ids for root."
  type        = list(string)
  default     = []
}

variable "ssh_cidrs" {
  description = "Who may SSH to the nodes (operators, the deploy runner)."
  type        = list(string)
}

variable "monitoring_cidrs" {
  description = "Who may scrape the admin API (Prometheus)."
  type        = list(string)
  default     = []
}

variable "inventory_path" {
  description = "Where to write the Ansible inventory (YAML); null writes none (use the ansible_inventory output)."
  type        = string
  default     = null
}
