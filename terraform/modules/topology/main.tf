# The platform's topology, computed without any provider: node names and
# ids, per-node cluster and BGP settings, the seed list and the Ansible
# inventory. Provider modules (vultr-region) create the machines for the
# nodes listed here; Ansible renders edged.yaml from the inventory.

locals {
  regions = var.platform.regions
  port    = var.platform.cluster_port

  # Regions in id order: the order of the seed choice, the inventory and so
  # the rolling upgrade.
  region_order = [for s in sort([for k, r in local.regions : format("%010d/%s", r.id, k)]) : split("/", s)[1]]

  # host:port with IPv6 hosts bracketed.
  hostport = { for n, a in var.node_addresses : n => strcontains(a, ":") ? "[${a}]" : a }

  nodes = flatten([for rname in local.region_order : [
    for i in range(1, local.regions[rname].node_count + 1) : {
      name   = format("%s-%02d", rname, i)
      region = rname
      index  = i
      id     = local.regions[rname].id * 1000 + i
      seed   = i == 1 && (var.platform.seed_per_region || rname == local.region_order[0])
    }
  ]])
  node_by_name = { for n in local.nodes : n.name => n }

  # Host part of a node's cluster address: its address when known, else its
  # name (resolved through DNS).
  node_host = { for n in local.nodes : n.name => lookup(local.hostport, n.name, n.name) }
  seeds     = [for n in local.nodes : "${local.node_host[n.name]}:${local.port}" if n.seed]

  # The BGP identifier is the node id written as an IPv4 address: unique
  # because node ids are, stable across rebuilds, and known before any
  # machine exists.
  router_id = { for n in local.nodes : n.name => format("%d.%d.%d.%d",
    floor(n.id / 16777216) % 256, floor(n.id / 65536) % 256, floor(n.id / 256) % 256, n.id % 256)
  }

  anycast_addresses = { for k, r in local.regions : k => coalesce(r.anycast_addresses, [
    for p in r.anycast_prefixes : try(cidrhost(p, split("/", p)[1] == (strcontains(p, ":") ? "128" : "32") ? 0 : 1), null)
  ]) }

  bgp = { for n in local.nodes : n.name => {
    asn       = local.regions[n.region].asn
    router_id = local.router_id[n.name]
    peers = [for p in local.regions[n.region].router_peers : {
      address  = p.address
      asn      = p.asn
      multihop = p.multihop
      bfd      = p.bfd
      md5      = p.md5
    }]
    prefixes = [for p in local.regions[n.region].anycast_prefixes : { prefix = p }]
  } }

  # Every node knows every tag, so that each can report the owner it sees
  # (anyedge_cluster_tag_owner); only the tag's region is eligible.
  tags = flatten([for rname in local.region_order : [
    for t in local.regions[rname].tags : {
      name       = t.name
      region     = rname
      vips       = t.vips
      priorities = { for name, prio in t.priority : tostring(local.node_by_name[name].id) => prio if contains(keys(local.node_by_name), name) }
    }
  ]])

  # Ansible group names: the region name with '-' as '_'.
  group = { for k in keys(local.regions) : k => replace(k, "-", "_") }

  hostvars = { for n in local.nodes : n.name => merge(
    contains(keys(var.node_addresses), n.name) ? { ansible_host = var.node_addresses[n.name] } : {},
    {
      anyedge_node_id           = n.id
      anyedge_region            = n.region
      anyedge_cluster_listen    = "${lookup(local.hostport, n.name, "0.0.0.0")}:${local.port}"
      anyedge_cluster_advertise = "${local.node_host[n.name]}:${local.port}"
      anyedge_cluster_seed      = n.seed
      # Seeds of the own region first: the donor is then close.
      anyedge_cluster_join = [for s in concat(
        [for m in local.nodes : m if m.seed && m.region == n.region],
        [for m in local.nodes : m if m.seed && m.region != n.region],
      ) : "${local.node_host[s.name]}:${local.port}" if s.name != n.name]
      anyedge_sip_port = var.platform.sip_port
      # The node's own address: a SIP listener, and cluster.sip_addr, which
      # other nodes relay to.
      anyedge_sip_address       = lookup(var.node_addresses, n.name, "")
      anyedge_anycast_addresses = local.anycast_addresses[n.region]
      anyedge_bgp               = local.bgp[n.name]
    },
  ) }

  inventory = {
    all = {
      vars = {
        anyedge_platform     = var.platform.name
        anyedge_cluster_tags = [for t in local.tags : { name = t.name, region = t.region, priorities = t.priorities }]
        anyedge_vips         = { for name, vips in { for t in local.tags : t.name => t.vips... } : name => flatten(vips) }
      }
      children = merge(
        { for rname in local.region_order : local.group[rname] => {
          hosts = { for n in local.nodes : n.name => local.hostvars[n.name] if n.region == rname }
        } },
        # All edge nodes, regions in id order: what the playbooks target.
        { edge = { children = { for rname in local.region_order : local.group[rname] => {} } } },
      )
    }
  }
}

# Checks across regions. Per-field checks are on var.platform.
locals {
  # Anycast prefixes with their family, length and network address.
  prefixes = flatten([for k, r in local.regions : [for p in r.anycast_prefixes : {
    region = k
    prefix = p
    v6     = strcontains(p, ":")
    len    = try(tonumber(split("/", p)[1]), 0)
    net    = try(cidrhost(p, 0), p)
  }]])
  vip_list = flatten([for k, r in local.regions : [for t in r.tags : [for v in t.vips : {
    region = k
    tag    = t.name
    prefix = "${v}/${strcontains(v, ":") ? 128 : 32}"
    v6     = strcontains(v, ":")
    len    = strcontains(v, ":") ? 128 : 32
    net    = v
  }]]])

  # Two prefixes overlap when their network addresses agree on the shorter
  # length. cidrhost("addr/len", 0) masks addr to len.
  prefix_pairs = flatten([for i in range(length(local.prefixes)) : [
    for j in range(i + 1, length(local.prefixes)) : {
      a       = local.prefixes[i]
      b       = local.prefixes[j]
      overlap = local.prefixes[i].v6 == local.prefixes[j].v6 && try(cidrhost("${local.prefixes[i].net}/${min(local.prefixes[i].len, local.prefixes[j].len)}", 0) == cidrhost("${local.prefixes[j].net}/${min(local.prefixes[i].len, local.prefixes[j].len)}", 0), false)
      same    = local.prefixes[i].prefix == local.prefixes[j].prefix
    }
  ]])
  # In one region no two prefixes may overlap (a duplicate or a nested
  # prefix); across regions a prefix is either the same anycast prefix or
  # disjoint.
  bad_prefix_overlaps = [for p in local.prefix_pairs : "${p.a.prefix} (${p.a.region}) and ${p.b.prefix} (${p.b.region})"
  if p.overlap && (p.a.region == p.b.region || !p.same)]

  # A VIP inside an anycast prefix would pull that address to one node for
  # the whole platform (a /32 beats the anycast route).
  bad_vips_in_anycast = flatten([for v in local.vip_list : [for p in local.prefixes :
    "${v.net} (tag ${v.tag}) is inside ${p.prefix} (${p.region})"
    if v.v6 == p.v6 && try(cidrhost("${v.net}/${p.len}", 0) == p.net, false)
  ]])
  vip_count      = { for v in local.vip_list : v.net => v.tag... }
  duplicate_vips = [for ip, tags in local.vip_count : "${ip} (tags ${join(", ", tags)})" if length(tags) > 1]

  region_ids    = { for k, r in local.regions : tostring(r.id) => k... }
  duplicate_ids = [for id, rs in local.region_ids : "region id ${id} is used by ${join(" and ", rs)} (node ids ${id}001.. would repeat)" if length(rs) > 1]

  tag_names      = { for t in local.tags : t.name => t.region... }
  duplicate_tags = [for n, rs in local.tag_names : "${n} (in ${join(", ", rs)})" if length(rs) > 1]

  peer_dups = flatten([for k, r in local.regions : [
    for a, c in { for p in r.router_peers : p.address => p.address... } : "${k}: ${a}" if length(c) > 1
  ]])
  bad_priority_nodes = flatten([for k, r in local.regions : [for t in r.tags : [
    for name in keys(t.priority) : "${t.name}: ${name}" if !contains([for n in local.nodes : n.name if n.region == k], name)
  ]]])
  bad_anycast_addresses = flatten([for k, r in local.regions : [
    for a in coalesce(r.anycast_addresses, []) : "${k}: ${a}"
    if !anytrue([for p in r.anycast_prefixes : strcontains(a, ":") == strcontains(p, ":") && try(cidrhost("${a}/${split("/", p)[1]}", 0) == cidrhost(p, 0), false)])
  ]])
}

# Fails the plan, naming the offending values, when the platform is
# inconsistent across regions.
resource "terraform_data" "checks" {
  input = length(local.nodes)

  lifecycle {
    precondition {
      condition     = length(local.bad_prefix_overlaps) == 0
      error_message = "Overlapping anycast prefixes (within a region no prefix may overlap another; across regions an anycast prefix must be identical or disjoint): ${join("; ", local.bad_prefix_overlaps)}."
    }
    precondition {
      condition     = length(local.bad_vips_in_anycast) == 0
      error_message = "VIPs overlap anycast prefixes: ${join("; ", local.bad_vips_in_anycast)}."
    }
    precondition {
      condition     = length(local.duplicate_vips) == 0
      error_message = "Duplicate VIPs: ${join("; ", local.duplicate_vips)}."
    }
    precondition {
      condition     = length(local.duplicate_ids) == 0
      error_message = "Duplicate node ids: ${join("; ", local.duplicate_ids)}."
    }
    precondition {
      condition     = length(local.duplicate_tags) == 0
      error_message = "Duplicate sharing tag names: ${join("; ", local.duplicate_tags)}."
    }
    precondition {
      condition     = length(local.peer_dups) == 0
      error_message = "Duplicate router peers: ${join("; ", local.peer_dups)}."
    }
    precondition {
      condition     = length(local.bad_priority_nodes) == 0
      error_message = "Tag priorities name nodes that are not in the tag's region: ${join("; ", local.bad_priority_nodes)}."
    }
    precondition {
      condition     = length(local.bad_anycast_addresses) == 0
      error_message = "Anycast addresses outside their region's anycast prefixes: ${join("; ", local.bad_anycast_addresses)}."
    }
  }
}
