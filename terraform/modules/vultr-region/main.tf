# One anyedge region on Vultr: an instance per node with a reserved IPv4
# address (so that a rebuilt node keeps the address its peers, the seed
# list and the firewall know), one firewall group, and first-boot user data
# that prepares the host for anycast.
#
# BGP with Vultr: every instance peers with 169.254.169.254 (and
# 2001:19f0:ffff::1 for IPv6), AS 64515, eBGP multihop 2, with the TCP-MD5
# password of the account's BGP setup. What Terraform cannot do, and stays
# manual (see docs/OPERATIONS.md): asking Vultr to enable BGP on the
# account (they assign or accept the ASN and set the password), and the
# ROA (RPKI) and IRR route objects that let Vultr and its upstreams accept
# the anycast prefix.

locals {
  nodes = { for n in var.nodes : n.name => n }

  # Vultr's BGP routers, the same in every location.
  bgp_peers = concat(
    [{ address = "169.254.169.254", asn = 64515, multihop = 2, bfd = false, md5 = true }],
    var.enable_ipv6 ? [{ address = "2001:19f0:ffff::1", asn = 64515, multihop = 2, bfd = false, md5 = true }] : [],
  )

  # Firewall rules by a stable key. SIP is open to the world (clients);
  # the cluster port only to the platform's nodes; SSH and the admin API
  # only to the given CIDRs.
  world = concat(
    [{ ip_type = "v4", subnet = "0.0.0.0", subnet_size = 0 }],
    var.enable_ipv6 ? [{ ip_type = "v6", subnet = "::", subnet_size = 0 }] : [],
  )
  sip_rules = merge([for w in local.world : {
    "sip-udp-${w.ip_type}" = merge(w, { protocol = "udp", port = tostring(var.sip_port), notes = "SIP over UDP" })
    "sip-tcp-${w.ip_type}" = merge(w, { protocol = "tcp", port = "${var.sip_port}:${var.sip_port + 1}", notes = "SIP over TCP and TLS" })
    "icmp-${w.ip_type}"    = merge(w, { protocol = "icmp", port = "", notes = "ICMP (path MTU discovery, ping)" })
  }]...)
  cidr_rules = merge(
    { for c in var.ssh_cidrs : "ssh-${c}" => {
      ip_type  = strcontains(c, ":") ? "v6" : "v4", subnet = split("/", c)[0], subnet_size = tonumber(split("/", c)[1])
      protocol = "tcp", port = "22", notes = "SSH"
    } },
    { for c in var.monitoring_cidrs : "admin-${c}" => {
      ip_type  = strcontains(c, ":") ? "v6" : "v4", subnet = split("/", c)[0], subnet_size = tonumber(split("/", c)[1])
      protocol = "tcp", port = tostring(var.admin_port), notes = "edged admin API (metrics)"
    } },
  )
  # Only the keys must be known at plan time: node names are.
  cluster_rules = { for name, addr in var.cluster_peers : "cluster-${name}" => {
    ip_type  = strcontains(addr, ":") ? "v6" : "v4", subnet = addr, subnet_size = strcontains(addr, ":") ? 128 : 32
    protocol = "tcp", port = tostring(var.cluster_port), notes = "anyedge cluster from ${name}"
  } }
}

resource "vultr_reserved_ip" "node" {
  for_each = local.nodes

  region  = var.location
  ip_type = "v4"
  label   = "anyedge-${each.key}"
}

resource "vultr_firewall_group" "edge" {
  description = "anyedge ${var.region} edge nodes"
}

resource "vultr_firewall_rule" "rule" {
  for_each = merge(local.sip_rules, local.cidr_rules, local.cluster_rules)

  firewall_group_id = vultr_firewall_group.edge.id
  ip_type           = each.value.ip_type
  protocol          = each.value.protocol
  subnet            = each.value.subnet
  subnet_size       = each.value.subnet_size
  port              = each.value.port
  notes             = each.value.notes
}

resource "vultr_instance" "node" {
  for_each = local.nodes

  region            = var.location
  plan              = var.plan
  os_id             = var.os_id
  label             = "anyedge-${each.key}"
  hostname          = each.key
  reserved_ip_id    = vultr_reserved_ip.node[each.key].id
  firewall_group_id = vultr_firewall_group.edge.id
  enable_ipv6       = var.enable_ipv6
  ssh_key_ids       = var.ssh_key_ids
  backups           = "disabled"
  ddos_protection   = false
  activation_email  = false
  tags              = concat(["anyedge", "anyedge-${var.region}"], var.tags)
  user_data = templatefile("${path.module}/templates/user-data.yaml.tftpl", {
    hostname          = each.key
    node_id           = each.value.id
    anycast_addresses = var.anycast_addresses
  })

  lifecycle {
    # User data only prepares the first boot; later changes go through
    # Ansible. Without this a changed anycast address would rebuild every
    # node at once (user_data forces a new instance).
    ignore_changes = [user_data]
  }
}
