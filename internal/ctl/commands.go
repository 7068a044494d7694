package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anyedge/anyedge/cluster"
)

// show fetches path and prints it: the API's JSON as-is with -o json, or
// decoded into T and rendered by table.
func show[T any](ctx context.Context, c *cli, path string, table func(io.Writer, T)) error {
	body, err := c.client.get(ctx, path)
	if err != nil {
		return err
	}
	if c.json {
		_, err := c.out.Write(body)
		return err
	}
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("GET %s: unexpected reply: %w", path, err)
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	table(tw, v)
	return tw.Flush()
}

func (c *cli) nodes(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/cluster/nodes", nodesTable)
}

func (c *cli) topology(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/cluster/topology", topologyTable)
}

func (c *cli) caps(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/cluster/caps", capsTable)
}

func (c *cli) tags(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/cluster/tags", tagsTable)
}

func (c *cli) setActive(ctx context.Context, args []string) error {
	tag := args[0]
	node, err := parseNode(args[1], true)
	if err != nil {
		return err
	}
	body, err := c.client.post(ctx, "/v1/cluster/tags/active", map[string]any{"tag": tag, "node": node})
	if err != nil {
		return err
	}
	switch {
	case c.json:
		_, err = c.out.Write(body)
	case node == 0:
		_, err = fmt.Fprintf(c.out, "sharing tag %s: override cleared, the cluster elects the owner\n", tag)
	default:
		_, err = fmt.Fprintf(c.out, "sharing tag %s: node %d set as the active owner\n", tag, node)
	}
	return err
}

func (c *cli) remove(ctx context.Context, args []string) error {
	node, err := parseNode(args[0], false)
	if err != nil {
		return err
	}
	body, err := c.client.post(ctx, "/v1/cluster/remove", map[string]any{"node": node})
	if err != nil {
		return err
	}
	if c.json {
		_, err = c.out.Write(body)
	} else {
		_, err = fmt.Fprintf(c.out, "node %d removed from the cluster\n", node)
	}
	return err
}

func parseNode(s string, zeroOK bool) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || (n == 0 && !zeroOK) {
		lo := 1
		if zeroOK {
			lo = 0
		}
		return 0, usageError(fmt.Sprintf("bad NODE %q: want a node id %d..4294967295", s, lo))
	}
	return uint32(n), nil
}

// Tables. Each starts with a header row; cells are tab-separated and
// aligned by the tabwriter. Empty cells show "-" so columns stay readable.

func nodesTable(w io.Writer, nodes []cluster.NodeView) {
	if len(nodes) == 0 {
		fmt.Fprintln(w, "no nodes known")
		return
	}
	nodes = sortedBy(nodes, func(n cluster.NodeView) uint32 { return n.ID })
	fmt.Fprintln(w, "ID\tREGION\tSTATE\tNEXT HOP\tHOPS\tRTT\tCLUSTER ADDR\tSIP ADDR\tPRIO\tFLAGS\tSYNCED")
	for _, n := range nodes {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			n.ID, dash(n.Region), n.State, nextHop(n), hops(n), rtt(n.RTT),
			dash(n.ClusterAddr), dash(n.SIPAddr), n.Priority, flags(n), list(n.Synced))
	}
}

func topologyTable(w io.Writer, t cluster.TopologyView) {
	up := 0
	for _, n := range t.Nodes {
		if n.State == "up" || n.State == "self" {
			up++
		}
	}
	fmt.Fprintf(w, "node %d sees %d nodes (%d up, %d down), %d links\n",
		t.Self, len(t.Nodes), up, len(t.Nodes)-up, len(t.Links))

	fmt.Fprintln(w, "\nNODES")
	fmt.Fprintln(w, "ID\tREGION\tSTATE\tNEXT HOP\tHOPS\tRTT")
	for _, n := range sortedBy(t.Nodes, func(n cluster.NodeView) uint32 { return n.ID }) {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", n.ID, dash(n.Region), n.State, nextHop(n), hops(n), rtt(n.RTT))
	}

	fmt.Fprintln(w, "\nLINKS")
	fmt.Fprintln(w, "A\tB\tSTATE\tRTT")
	links := slices.Clone(t.Links)
	slices.SortFunc(links, func(a, b cluster.LinkView) int {
		return cmp.Or(cmp.Compare(a.A, b.A), cmp.Compare(a.B, b.B))
	})
	for _, l := range links {
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\n", l.A, l.B, l.State, rtt(l.RTT))
	}

	fmt.Fprintln(w, "\nROUTES")
	fmt.Fprintln(w, "DST\tNEXT HOP\tPATH")
	for _, r := range sortedBy(t.Routes, func(r cluster.RouteView) uint32 { return r.Dst }) {
		path := []string{strconv.FormatUint(uint64(t.Self), 10)}
		for _, id := range r.Path {
			path = append(path, strconv.FormatUint(uint64(id), 10))
		}
		fmt.Fprintf(w, "%d\t%d\t%s\n", r.Dst, r.NextHop, strings.Join(path, " -> "))
	}
}

func capsTable(w io.Writer, caps []cluster.CapView) {
	if len(caps) == 0 {
		fmt.Fprintln(w, "no capabilities registered")
		return
	}
	fmt.Fprintln(w, "CAPABILITY\tSTATE\tDONOR\tRECORDS\tATTEMPTS")
	for _, c := range caps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\n", c.Name, c.State, node(c.Donor), c.Records, c.Attempts)
	}
}

func tagsTable(w io.Writer, tags []cluster.TagView) {
	if len(tags) == 0 {
		fmt.Fprintln(w, "no sharing tags configured")
		return
	}
	fmt.Fprintln(w, "TAG\tOWNER\tACTIVE HERE\tOVERRIDE\tQUORUM\tELIGIBLE")
	for _, t := range tags {
		owner := "none"
		if t.Owner != 0 {
			owner = strconv.FormatUint(uint64(t.Owner), 10)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n",
			t.Name, owner, yesNo(t.Active), node(t.Override), yesNo(t.Quorum), ids(t.Eligible))
	}
}

// rtt prints a round-trip time in milliseconds with two decimals: LAN
// links are well under a millisecond, WAN links tens of milliseconds.
func rtt(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func nextHop(n cluster.NodeView) string {
	if n.NextHop == 0 {
		return "-"
	}
	if n.Direct && n.NextHop == n.ID {
		return "direct"
	}
	return strconv.FormatUint(uint64(n.NextHop), 10)
}

func hops(n cluster.NodeView) string {
	if n.State != "self" && n.Hops == 0 {
		return "-" // unreachable
	}
	return strconv.Itoa(n.Hops)
}

func flags(n cluster.NodeView) string {
	var f []string
	if n.Seed {
		f = append(f, "seed")
	}
	if n.Direct {
		f = append(f, "direct")
	}
	if n.Drained {
		f = append(f, "drained")
	}
	return list(f)
}

func node(id uint32) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(id), 10)
}

func ids(v []uint32) string {
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return list(s)
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// sortedBy returns a copy of s sorted by key; the API's order is not a
// promise, and an operator scans by id.
func sortedBy[T any](s []T, key func(T) uint32) []T {
	s = slices.Clone(s)
	slices.SortStableFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return s
}
