package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/anyedge/anyedge/internal/admin"
)

// Commands for readiness, drain, CPS and BGP.

// errNotReady makes `edgectl ready` exit 1 after printing the readiness:
// the output says it all, so nothing goes to stderr.
var errNotReady = errors.New("not ready")

func (c *cli) ready(ctx context.Context, _ []string) error {
	status, body, err := c.client.getAny(ctx, "/readyz")
	if err != nil {
		return err
	}
	var r admin.ReadyBody
	if (status != 200 && status != 503) || json.Unmarshal(body, &r) != nil {
		return fmt.Errorf("GET /readyz: unexpected reply: %d %s", status, strings.TrimSpace(string(body)))
	}
	if c.json {
		_, err = c.out.Write(body)
	} else {
		err = readyText(c.out, r)
	}
	if err != nil {
		return err
	}
	if !r.Ready {
		return errNotReady
	}
	return nil
}

func readyText(w io.Writer, r admin.ReadyBody) error {
	if r.Ready {
		_, err := fmt.Fprintln(w, "ready")
		return err
	}
	var b strings.Builder
	b.WriteString("not ready\n")
	for _, why := range r.Reasons {
		b.WriteString("  - " + why + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (c *cli) drain(ctx context.Context, _ []string) error {
	body, err := c.client.post(ctx, "/v1/drain", struct{}{})
	if err != nil {
		return err
	}
	if c.wait {
		if err := c.waitDrained(ctx); err != nil {
			return err
		}
	}
	switch {
	case c.json:
		_, err = c.out.Write(body)
	case c.wait:
		_, err = fmt.Fprintln(c.out, "node drained: not ready, nothing announced")
	default:
		_, err = fmt.Fprintln(c.out, "node drained: it stops being ready and its prefixes are withdrawn (drain -wait waits for it)")
	}
	return err
}

// waitDrained polls until the node is not ready and announces nothing (a
// node without BGP announces nothing), or -wait-timeout.
func (c *cli) waitDrained(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.waitTimeout)
	defer cancel()
	t := time.NewTicker(c.pollEvery)
	defer t.Stop()
	for {
		why, err := c.stillServing(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil && why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			if why == "" {
				why = "no answer"
			}
			return fmt.Errorf("drained, but after %s the node is still serving: %s", c.waitTimeout, why)
		case <-t.C:
		}
	}
}

// stillServing says why the node is not drained yet, or "" when it is.
func (c *cli) stillServing(ctx context.Context) (string, error) {
	status, _, err := c.client.getAny(ctx, "/readyz")
	if err != nil {
		return "", err
	}
	if status == 200 {
		return "still ready", nil
	}
	status, body, err := c.client.getAny(ctx, "/v1/bgp/routes")
	if err != nil {
		return "", err
	}
	switch status {
	case 404: // no BGP on this node: nothing to withdraw
		return "", nil
	case 200:
	default:
		return "", fmt.Errorf("GET /v1/bgp/routes: %d %s", status, strings.TrimSpace(string(body)))
	}
	var routes []admin.BGPRoute
	if err := json.Unmarshal(body, &routes); err != nil {
		return "", fmt.Errorf("GET /v1/bgp/routes: unexpected reply: %w", err)
	}
	if len(routes) > 0 {
		return fmt.Sprintf("%d prefixes still announced", len(routes)), nil
	}
	return "", nil
}

func (c *cli) undrain(ctx context.Context, _ []string) error {
	body, err := c.client.post(ctx, "/v1/undrain", struct{}{})
	if err != nil {
		return err
	}
	if c.json {
		_, err = c.out.Write(body)
	} else {
		_, err = fmt.Fprintln(c.out, "node undrained: it announces its prefixes again once ready")
	}
	return err
}

func (c *cli) cps(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/cps", cpsTable)
}

func (c *cli) cpsTop(ctx context.Context, args []string) error {
	name, n := args[0], 10
	if len(args) > 1 {
		v, err := strconv.Atoi(args[1])
		if err != nil || v < 1 || v > 1000 {
			return usageError(fmt.Sprintf("bad N %q: want a count 1..1000", args[1]))
		}
		n = v
	}
	q := url.Values{"limit": {name}, "n": {strconv.Itoa(n)}}
	return show(ctx, c, "/v1/cps/top?"+q.Encode(), func(w io.Writer, top []admin.CPSKeyRate) {
		if len(top) == 0 {
			fmt.Fprintf(w, "no calls in %s's window\n", name)
			return
		}
		fmt.Fprintln(w, "KEY\tRATE NOW")
		for _, k := range top {
			fmt.Fprintf(w, "%s\t%s\n", k.Key, perSecond(k.Rate))
		}
	})
}

func (c *cli) cpsSet(ctx context.Context, args []string) error {
	name := args[0]
	rate, err := strconv.ParseFloat(args[1], 64)
	if err != nil || !(rate > 0) {
		return usageError(fmt.Sprintf("bad RATE %q: want calls per second, > 0", args[1]))
	}
	body, err := c.client.post(ctx, "/v1/cps/rate", admin.SetRateRequest{Name: name, Rate: rate})
	if err != nil {
		return err
	}
	if c.json {
		_, err = c.out.Write(body)
	} else {
		_, err = fmt.Fprintf(c.out, "cps limit %s: rate set to %s, cluster-wide\n", name, perSecond(rate))
	}
	return err
}

func (c *cli) bgpPeers(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/bgp/peers", bgpPeersTable)
}

func (c *cli) bgpRoutes(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/bgp/routes", bgpRoutesTable)
}

func cpsTable(w io.Writer, limits []admin.CPSLimit) {
	if len(limits) == 0 {
		fmt.Fprintln(w, "no cps limits configured")
		return
	}
	fmt.Fprintln(w, "LIMIT\tSELECTOR\tREGION\tWINDOW\tRATE LIMIT\tRATE NOW\tOFFERED\tREJECTED\tKEYS")
	for _, l := range limits {
		limit := perSecond(l.Limit)
		if l.Share < 1 {
			// Under the split policy part of the platform is out of
			// sight, and only its share of the limit is in force here.
			limit += fmt.Sprintf(" (%.0f%% in force)", l.Share*100)
		}
		keys := "-"
		if l.Selector != "global" {
			keys = strconv.Itoa(l.Keys)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			l.Name, l.Selector, dash(l.Region), l.Window, limit, perSecond(l.Rate), perSecond(l.Offered), l.Rejected, keys)
	}
}

func bgpPeersTable(w io.Writer, peers []admin.BGPPeer) {
	if len(peers) == 0 {
		fmt.Fprintln(w, "no BGP peers configured")
		return
	}
	fmt.Fprintln(w, "PEER\tASN\tSTATE\tUPTIME\tSENT\tRECEIVED\tBFD\tLAST ERROR")
	for _, p := range peers {
		up := "-"
		if p.Uptime > 0 {
			up = p.Uptime.Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%d\t%s\t%s\n",
			p.Address, p.ASN, p.State, up, p.PrefixesSent, p.PrefixesReceived, dash(p.BFD), dash(p.LastError))
	}
}

func bgpRoutesTable(w io.Writer, routes []admin.BGPRoute) {
	if len(routes) == 0 {
		fmt.Fprintln(w, "nothing announced")
		return
	}
	fmt.Fprintln(w, "PREFIX\tNEXT HOP\tMED\tLOCAL PREF\tPREPEND\tCOMMUNITIES\tANNOUNCED TO")
	for _, r := range routes {
		to := list(r.Peers)
		if len(r.Peers) == 0 {
			to = "no established peer"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Prefix, or(r.NextHop, "self"), num(r.MED), num(r.LocalPref), num(uint32(r.Prepend)), list(r.Communities), to)
	}
}

// perSecond prints a rate in calls per second with at most two decimals.
func perSecond(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + "/s"
}

func num(v uint32) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(v), 10)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
