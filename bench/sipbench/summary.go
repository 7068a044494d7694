package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// medianMax is the median over runs of a server's sustained rate.
func medianMax(res *results, server, kind string) int {
	var v []float64
	for _, r := range res.Ramps {
		if r.Server == server && r.Kind == kind {
			v = append(v, float64(r.Max))
		}
	}
	return int(median(v))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// summary renders the results as Markdown.
func summary(res *results) string {
	var s strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&s, format+"\n", a...) }
	w("# SIP benchmark, %s", res.Started.Format("2006-01-02 15:04"))
	w("")
	w("machine: %s  ", res.Machine)
	for _, k := range []string{"edged", "kamailio", "sipp"} {
		w("%s: %s  ", k, res.Versions[k])
	}
	w("settings: %v  ", res.Settings)
	w("load average at the start of each run: %s", strings.Join(res.Load, " | "))
	w("")
	if len(res.Ramps) > 0 {
		w("## Highest sustained rate (no failed call), per run; median")
		w("")
		w("| test | server | runs (ops/s) | median | server CPU per op at max (median) | SIPp cores at max | ours / Kamailio |")
		w("|---|---|---|---|---|---|---|")
		for _, kind := range []string{kindReg, kindCall} {
			meds := map[string]float64{}
			cpus := map[string]float64{}
			for _, srv := range []string{"edged", "kamailio"} {
				var rates, cpu, sipp []float64
				var runs []string
				for _, r := range res.Ramps {
					if r.Server != srv || r.Kind != kind {
						continue
					}
					rates = append(rates, float64(r.Max))
					runs = append(runs, fmt.Sprint(r.Max))
					if r.AtMax != nil {
						cpu = append(cpu, float64(r.AtMax.CPUPerOp()))
						sipp = append(sipp, r.AtMax.SippCores())
					}
				}
				if len(rates) == 0 {
					continue
				}
				meds[srv], cpus[srv] = median(rates), median(cpu)
				rat := ""
				if srv == "kamailio" {
					rat = fmt.Sprintf("rate %s, CPU/op %s", ratio(meds["edged"], meds["kamailio"]), ratio(cpus["edged"], cpus["kamailio"]))
				}
				w("| %s | %s | %s | %.0f | %v | %.2f | %s |", kind, srv, strings.Join(runs, ", "), meds[srv],
					time.Duration(cpus[srv]).Round(time.Microsecond/10), median(sipp), rat)
			}
		}
		w("")
		w("Server CPU per operation at the same offered rate (passing ramp steps, median over runs):")
		w("")
		w("| test | rate | edged | kamailio | ratio |")
		w("|---|---|---|---|---|")
		for _, kind := range []string{kindReg, kindCall} {
			for _, rate := range ladder {
				per := map[string][]float64{}
				for _, r := range res.Ramps {
					if r.Kind != kind {
						continue
					}
					for _, st := range r.Steps {
						if st.Rate == rate && st.Pass {
							per[r.Server] = append(per[r.Server], float64(st.CPUPerOp()))
						}
					}
				}
				if len(per["edged"]) == 0 || len(per["kamailio"]) == 0 {
					continue
				}
				e, k := median(per["edged"]), median(per["kamailio"])
				w("| %s | %d | %v | %v | %s |", kind, rate, time.Duration(e).Round(time.Microsecond),
					time.Duration(k).Round(time.Microsecond), ratio(e, k))
			}
		}
		w("")
		w("### Every step")
		w("")
		w("| server | test | rate | s | result | retrans | server CPU/op | SIPp cores |")
		w("|---|---|---|---|---|---|---|---|")
		for _, r := range res.Ramps {
			for _, st := range r.Steps {
				w("| %s | %s | %d | %.0f | %s | %d | %v | %.2f |", r.Server, r.Kind, st.Rate, st.Duration.Seconds(),
					passText(st), st.Retrans, st.CPUPerOp().Round(time.Microsecond/10), st.SippCores())
			}
		}
		w("")
	}
	if len(res.Latencies) > 0 {
		w("## Response time at half of edged's sustained rate (SIPp rtd, 1 ms resolution)")
		w("")
		w("| test | server | rate | p50 ms | p90 ms | p99 ms | max ms | samples | result |")
		w("|---|---|---|---|---|---|---|---|---|")
		for _, l := range res.Latencies {
			w("| %s | %s | %d | %s | %s | %s | %s | %d | %s |", l.Kind, l.Server, l.Rate, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), l.Samples, passText(l.Step))
		}
		w("")
		w("medians over runs:")
		w("")
		for _, kind := range []string{kindReg, kindCall} {
			for _, srv := range []string{"edged", "kamailio"} {
				var p50, p99 []float64
				for _, l := range res.Latencies {
					if l.Kind == kind && l.Server == srv {
						p50, p99 = append(p50, l.P50), append(p99, l.P99)
					}
				}
				if len(p50) > 0 {
					w("- %s %s: p50 %s ms, p99 %s ms", kind, srv, ms(median(p50)), ms(median(p99)))
				}
			}
		}
		w("")
	}
	if len(res.Profiles) > 0 {
		w("## Where edged's CPU goes (perf, self time)")
		w("")
		for _, p := range res.Profiles {
			w("%s at %d/s (%s): by package: %s", p.Kind, p.Rate, passText(p.Step), fmtShares(p.Packages, 10))
			w("")
			w("- top symbols (self): %s", fmtShares(p.Self, 12))
			w("- top symbols (with callees): %s", fmtShares(p.Inclusive, 15))
			w("")
		}
	}
	if len(res.Memory) > 0 {
		w("## Memory per stored binding")
		w("")
		w("| server | bindings | load | before | after | bytes/binding | notes |")
		w("|---|---|---|---|---|---|---|")
		for _, m := range res.Memory {
			what := "RSS"
			notes := fmt.Sprintf("settled %v after %v; idle %.2f cores", m.Settled, m.Settle.Round(time.Second), m.IdleCPU)
			if m.Server == "edged" {
				notes += fmt.Sprintf("; live heap %.0f B/binding; peak RSS %d MB; keepalive %v", m.HeapPer, m.PeakRSS>>20, m.Keepalive)
			} else {
				what = "shm used"
			}
			w("| %s | %d (stored %d) | %d procs, %d/s, %v, %d failed, %d retrans | %s %d MB | %d MB | %.0f | %s |",
				m.Server, m.Bindings, m.Stored, m.Procs, m.Rate, m.LoadTime.Round(time.Second), m.Failed, m.Retrans,
				what, m.Before>>20, m.After>>20, m.PerBind, notes)
		}
		w("")
	}
	if len(res.Errors) > 0 {
		w("## Errors")
		w("")
		for _, e := range res.Errors {
			w("- %s", e)
		}
	}
	return s.String()
}

// ms renders a SIPp response time: SIPp truncates to whole milliseconds,
// so 0 means under 1 ms.
func ms(v float64) string {
	if v < 1 {
		return "<1"
	}
	return fmt.Sprintf("%.0f", v)
}
