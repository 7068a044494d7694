package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// edged has no /debug/pprof endpoint, so it is profiled from outside with
// perf (Go keeps frame pointers and symbols, so stacks and names are
// right).

// share is a symbol's or a package's part of the samples, in percent.
type share struct {
	Name string  `json:"name"`
	Pct  float64 `json:"pct"`
}

// profile is where edged's CPU time goes at one rate.
type profile struct {
	Kind      string     `json:"kind"`
	Rate      int        `json:"rate"`
	Step      stepResult `json:"step"`
	Self      []share    `json:"self"`      // by symbol, self time
	Packages  []share    `json:"packages"`  // self time added up by Go package
	Inclusive []share    `json:"inclusive"` // by symbol, with callees
	Data      string     `json:"data"`      // perf.data
}

// profiles profiles a fresh edged at the median sustained rate of each kind.
func (b *bench) profiles(ctx context.Context, res *results) error {
	for _, kind := range []string{kindReg, kindCall} {
		rate := medianMax(res, "edged", kind)
		if rate == 0 {
			continue
		}
		p, err := withServer(b, ctx, "edged", func(srv server) (profile, error) {
			if kind == kindCall {
				uas, err := b.registerCallee(ctx, srv, "prof", 2*b.confirmDur+time.Minute)
				if err != nil {
					return profile{}, err
				}
				defer uas.stop()
			}
			return b.profileStep(ctx, srv.(*edged), kind, rate)
		})
		if err != nil {
			return err
		}
		res.Profiles = append(res.Profiles, p)
	}
	return nil
}

func (b *bench) profileStep(ctx context.Context, e *edged, kind string, rate int) (profile, error) {
	p := profile{Kind: kind, Rate: rate, Data: filepath.Join(b.out, "edged-"+kind+".perf.data")}
	secs := int(b.confirmDur.Seconds())
	pctx, cancel := context.WithTimeout(ctx, b.confirmDur+30*time.Second)
	defer cancel()
	rec := exec.CommandContext(pctx, b.perf, "record", "-q", "-F", "499", "-g",
		"-p", strconv.Itoa(e.PID()), "-o", p.Data, "--", "sleep", strconv.Itoa(secs))
	out, err := os.Create(filepath.Join(b.out, "edged-"+kind+".perf.log"))
	if err != nil {
		return p, err
	}
	defer out.Close()
	rec.Stdout, rec.Stderr = out, out
	if err := rec.Start(); err != nil {
		return p, fmt.Errorf("perf record: %w", err)
	}
	st, _, err := b.step(ctx, e, kind, rate, b.confirmDur, "prof", false)
	werr := rec.Wait()
	if err != nil {
		return p, err
	}
	if werr != nil {
		return p, fmt.Errorf("perf record: %w (see %s)", werr, out.Name())
	}
	p.Step = st
	self, err := b.perfReport(ctx, p.Data, "--no-children")
	if err != nil {
		return p, err
	}
	incl, err := b.perfReport(ctx, p.Data, "--children")
	if err != nil {
		return p, err
	}
	p.Self, p.Inclusive = top(self, 25), top(incl, 25)
	byPkg := map[string]float64{}
	for _, s := range self {
		byPkg[pkgOf(s.Name)] += s.Pct
	}
	for k, v := range byPkg {
		p.Packages = append(p.Packages, share{k, v})
	}
	p.Packages = top(p.Packages, 15)
	b.logf("    profile of edged, %s at %d/s: %s", kind, rate, fmtShares(p.Packages, 6))
	return p, nil
}

// perfReport lists symbols and their percentages from perf.data.
func (b *bench) perfReport(ctx context.Context, data, mode string) ([]share, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(rctx, b.perf, "report", "-i", data, "--stdio", mode,
		"--sort", "symbol", "-g", "none", "--percent-limit", "0.1")
	o, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("perf report: %w", err)
	}
	var out []share
	sc := bufio.NewScanner(strings.NewReader(string(o)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// "--no-children": "12.34%  [.] sym"; "--children": "40.1%  12.3%  [.] sym"
		if len(f) < 3 || strings.HasPrefix(f[0], "#") || !strings.HasSuffix(f[0], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil {
			continue
		}
		i := slices.IndexFunc(f, func(s string) bool { return s == "[.]" || s == "[k]" })
		if i < 0 || i+1 >= len(f) {
			continue
		}
		rest := f[i+1:]
		for len(rest) > 1 && rest[len(rest)-1] == "-" {
			rest = rest[:len(rest)-1] // empty columns perf pads with
		}
		name := strings.Join(rest, " ")
		if f[i] == "[k]" {
			name = "[kernel] " + name
		}
		out = append(out, share{name, pct})
	}
	return out, sc.Err()
}

// pkgOf is the Go package of a symbol ("runtime", "github.com/x/y/z"),
// "kernel" or "other".
func pkgOf(sym string) string {
	if strings.HasPrefix(sym, "[kernel]") {
		return "kernel"
	}
	slash := strings.LastIndexByte(sym, '/')
	dot := strings.IndexByte(sym[slash+1:], '.')
	if dot < 0 {
		return "other"
	}
	return sym[:slash+1+dot]
}

func top(s []share, n int) []share {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b share) int {
		switch {
		case a.Pct > b.Pct:
			return -1
		case a.Pct < b.Pct:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return s[:min(n, len(s))]
}

func fmtShares(s []share, n int) string {
	var parts []string
	for _, x := range s[:min(n, len(s))] {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", x.Name, x.Pct))
	}
	return strings.Join(parts, ", ")
}
