# The valid platform that tests/topology.tftest.hcl starts from; each run
# derives its input from these outputs (run.base.*). A module rather than
# test-file variables, because OpenTofu does not let a run's variables
# refer to test-file variables that the module does not declare.

output "platform" {
  value = {
    name = "anyedge"
    regions = {
      eu-west = {
        id               = 1
        location         = "ams"
        node_count       = 2
        plan             = "vc2-2c-4gb"
        asn              = 4200000001
        router_peers     = [{ address = "169.254.169.254", asn = 64515, multihop = 2, md5 = true }]
        anycast_prefixes = ["203.0.113.0/24", "2001:db8:100::/48"]
        tags             = [{ name = "vip-eu", vips = ["198.51.100.10"], priority = { "eu-west-02" = 200 } }]
      }
      us-east = {
        id               = 2
        location         = "ewr"
        node_count       = 3
        plan             = "vc2-2c-4gb"
        asn              = 4200000001
        router_peers     = [{ address = "169.254.169.254", asn = 64515, multihop = 2, md5 = true }]
        anycast_prefixes = ["203.0.113.0/24"]
        tags             = [{ name = "vip-us", vips = ["198.51.100.20", "2001:db8:200::20"] }]
      }
      ap-south = {
        id                = 7
        location          = "sgp"
        node_count        = 1
        plan              = "vc2-1c-2gb"
        asn               = 64700
        router_peers      = [{ address = "192.0.2.1", asn = 64701, bfd = true }]
        anycast_prefixes  = ["203.0.113.0/24"]
        anycast_addresses = ["203.0.113.10"]
      }
    }
  }
}

output "node_addresses" {
  value = {
    "eu-west-01" = "192.0.2.11"
    "eu-west-02" = "192.0.2.12"
    "us-east-01" = "2001:db8:ffff::1"
  }
}
