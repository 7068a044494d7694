variable "platform" {
  description = <<-EOT
    The platform: its name, the cluster's ports, and its regions. Each region
    is keyed by its name (a DNS label, for example "eu-west") and has:
      id               stable number of the region, 1..4294966; node ids are
                       id * 1000 + n for node n (1..999), so ids never change
                       when regions are added, removed or resized
      location         the provider's location code (for example "ams")
      node_count       edge nodes in the region, 1..999
      plan             the provider's instance plan
      asn              the nodes' AS number
      router_peers     the routers the nodes announce to: address, asn,
                       multihop (0: directly connected), bfd, md5 (the
                       session needs a TCP-MD5 password; Ansible supplies it)
      anycast_prefixes prefixes announced by every node of the region; a
                       prefix announced in several regions must be identical
                       in each (that is what anycast is), never nested
      anycast_addresses addresses configured on lo and served by edged;
                       default: the first address of each anycast prefix
      tags             sharing tags (one active owner among the region's
                       nodes) with the VIPs that move with them
  EOT
  type = object({
    name            = string
    cluster_port    = optional(number, 5600)
    sip_port        = optional(number, 5060)
    seed_per_region = optional(bool, true)
    regions = map(object({
      id         = number
      location   = string
      node_count = number
      plan       = string
      asn        = number
      router_peers = list(object({
        address  = string
        asn      = number
        multihop = optional(number, 0)
        bfd      = optional(bool, false)
        md5      = optional(bool, false)
      }))
      anycast_prefixes  = list(string)
      anycast_addresses = optional(list(string))
      tags = optional(list(object({
        name     = string
        vips     = optional(list(string), [])
        priority = optional(map(number), {})
      })), [])
    }))
  })

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.platform.name))
    error_message = "platform.name must be a lowercase DNS label (a-z, 0-9, '-'), got \"${var.platform.name}\"."
  }
  validation {
    condition     = length(var.platform.regions) > 0
    error_message = "platform.regions is empty: declare at least one region."
  }
  validation {
    condition     = alltrue([for r in keys(var.platform.regions) : can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", r))])
    error_message = "region names must be lowercase DNS labels (a-z, 0-9, '-', at most 32 characters); bad: ${join(", ", [for r in keys(var.platform.regions) : r if !can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", r))])}."
  }
  validation {
    condition     = alltrue([for r in values(var.platform.regions) : r.node_count >= 1 && r.node_count <= 999 && floor(r.node_count) == r.node_count])
    error_message = "every region needs 1..999 nodes; empty or oversized: ${join(", ", [for k, r in var.platform.regions : "${k} (node_count ${r.node_count})" if !(r.node_count >= 1 && r.node_count <= 999 && floor(r.node_count) == r.node_count)])}."
  }
  validation {
    condition     = alltrue([for r in values(var.platform.regions) : r.id >= 1 && r.id <= 4294966 && floor(r.id) == r.id])
    error_message = "region ids must be integers 1..4294966 (node ids are id * 1000 + n and must fit 32 bits); bad: ${join(", ", [for k, r in var.platform.regions : "${k} (id ${r.id})" if !(r.id >= 1 && r.id <= 4294966 && floor(r.id) == r.id)])}."
  }
  # A usable AS number: 1..4294967294, not AS_TRANS (23456, RFC 6793), not
  # 65535 or 4294967295 (reserved, RFC 7300), not the documentation ranges
  # 64496..64511 and 65536..65551 (RFC 5398), not 65552..131071 (reserved).
  validation {
    condition = alltrue(flatten([for r in values(var.platform.regions) : [
      for a in concat([r.asn], [for p in r.router_peers : p.asn]) :
      a >= 1 && a <= 4294967294 && floor(a) == a && a != 23456 && a != 65535 &&
      !(a >= 64496 && a <= 64511) && !(a >= 65536 && a <= 131071)
    ]]))
    error_message = "bad AS number (must be 1..4294967294, not 23456 AS_TRANS, 65535, 64496-64511 or 65536-131071): ${join(", ", flatten([for k, r in var.platform.regions : [
      for a in concat([r.asn], [for p in r.router_peers : p.asn]) : "${k}: ${a}"
      if !(a >= 1 && a <= 4294967294 && floor(a) == a && a != 23456 && a != 65535 && !(a >= 64496 && a <= 64511) && !(a >= 65536 && a <= 131071))
    ]]))}."
  }
  validation {
    condition     = alltrue([for r in values(var.platform.regions) : length(r.router_peers) > 0])
    error_message = "every region needs at least one router peer; none in: ${join(", ", [for k, r in var.platform.regions : k if length(r.router_peers) == 0])}."
  }
  validation {
    condition     = alltrue([for r in values(var.platform.regions) : length(r.anycast_prefixes) > 0])
    error_message = "every region must announce at least one anycast prefix; none in: ${join(", ", [for k, r in var.platform.regions : k if length(r.anycast_prefixes) == 0])}."
  }
  # Prefixes in canonical form: valid, no host bits, as cidrhost prints
  # them (so that comparisons between regions are exact).
  validation {
    condition = alltrue(flatten([for r in values(var.platform.regions) : [
      for p in r.anycast_prefixes : try("${cidrhost(p, 0)}/${split("/", p)[1]}" == p, false)
    ]]))
    error_message = "anycast prefixes must be canonical CIDRs without host bits (for example 203.0.113.0/24, 2001:db8::/48); bad: ${join(", ", flatten([for k, r in var.platform.regions : [
      for p in r.anycast_prefixes : "${k}: ${p}" if !try("${cidrhost(p, 0)}/${split("/", p)[1]}" == p, false)
    ]]))}."
  }
  validation {
    condition = alltrue(flatten([for r in values(var.platform.regions) : [
      for a in concat([for p in r.router_peers : p.address], flatten([for t in r.tags : t.vips]), coalesce(r.anycast_addresses, [])) :
      can(cidrhost("${a}/${strcontains(a, ":") ? 128 : 32}", 0)) && !strcontains(a, "/")
    ]]))
    error_message = "router peer addresses, VIPs and anycast addresses must be plain IP addresses; bad: ${join(", ", flatten([for k, r in var.platform.regions : [
      for a in concat([for p in r.router_peers : p.address], flatten([for t in r.tags : t.vips]), coalesce(r.anycast_addresses, [])) :
      "${k}: ${a}" if !(can(cidrhost("${a}/${strcontains(a, ":") ? 128 : 32}", 0)) && !strcontains(a, "/"))
    ]]))}."
  }
  validation {
    condition     = alltrue(flatten([for r in values(var.platform.regions) : [for p in r.router_peers : p.multihop >= 0 && p.multihop <= 255 && !(p.bfd && p.multihop > 0)]]))
    error_message = "router_peers: multihop is 0..255, and BFD is single-hop only (RFC 5881): not with multihop."
  }
  validation {
    condition     = alltrue([for p in [var.platform.cluster_port, var.platform.sip_port] : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "platform.cluster_port and platform.sip_port must be ports 1..65535."
  }
}

variable "node_addresses" {
  description = "The nodes' public addresses by node name, once known (from the provider). Nodes without one are addressed by their name (DNS) in the seed list and the inventory."
  type        = map(string)
  default     = {}
}
