package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Test kinds.
const (
	kindReg  = "register" // REGISTER of a new user, no auth: 200
	kindCall = "call"     // INVITE/100/200/ACK/BYE/200 through the proxy to a UAS
)

// ladder holds the offered rates of a ramp: about ×1.25 a step (the R10
// series), so that the highest passing rate is within 25 % of the limit.
var ladder = []int{100, 125, 160, 200, 250, 320, 400, 500, 630, 800, 1000, 1250,
	1600, 2000, 2500, 3200, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000}

// startRate is where a ramp begins; lower steps are only tried if it fails.
var startRate = map[string]int{kindReg: 500, kindCall: 200}

// stepResult is one fixed-rate SIPp run against a server.
type stepResult struct {
	Rate      int           `json:"rate"`
	Duration  time.Duration `json:"duration"`
	Pass      bool          `json:"pass"`
	Why       string        `json:"why,omitempty"` // why it failed
	Calls     int           `json:"calls"`
	Success   int           `json:"success"`
	Failed    int           `json:"failed"`
	Retrans   int           `json:"retransmissions"`
	Wall      time.Duration `json:"wall"`
	ServerCPU time.Duration `json:"server_cpu"`
	SippCPU   time.Duration `json:"sipp_cpu"`
}

// CPUPerOp is the server's CPU time per successful operation.
func (s stepResult) CPUPerOp() time.Duration {
	if s.Success == 0 {
		return 0
	}
	return s.ServerCPU / time.Duration(s.Success)
}

// SippCores is how many cores SIPp kept busy: near 1 means SIPp, not the
// server, was the limit.
func (s stepResult) SippCores() float64 {
	if s.Wall <= 0 {
		return 0
	}
	return s.SippCPU.Seconds() / s.Wall.Seconds()
}

// rampResult is the highest sustained rate of one server for one kind.
type rampResult struct {
	Server    string       `json:"server"`
	Kind      string       `json:"kind"`
	Max       int          `json:"max"`        // confirmed, ops/s; 0: none
	FirstFail int          `json:"first_fail"` // lowest failing rate of the ramp
	AtMax     *stepResult  `json:"at_max,omitempty"`
	Steps     []stepResult `json:"steps"`
}

// step runs kind at rate for d against srv: one SIPp process, calls
// numbered from 1, users (for REGISTER) prefixed by tag.
func (b *bench) step(ctx context.Context, srv server, kind string, rate int, d time.Duration, tag string, rtt bool) (stepResult, *sippResult, error) {
	n := int(math.Round(float64(rate) * d.Seconds()))
	spec := sippSpec{
		name:   fmt.Sprintf("%s-%s-%s-%d", srv.Name(), kind, tag, rate),
		remote: srv.Addr(),
		expect: d,
		rtt:    rtt,
		args: []string{"-key", "domain", "example.com",
			"-r", fmt.Sprint(rate), "-rp", "1000", "-m", fmt.Sprint(n)},
	}
	switch kind {
	case kindReg:
		spec.scenario = "reg_unique.xml"
		spec.args = append(spec.args, "-key", "user", tag+"u", "-key", "expires", "3600")
	case kindCall:
		spec.scenario = "uac_call_short.xml"
		spec.args = append(spec.args, "-s", "callee")
	}
	cpu0, err := srv.CPU()
	if err != nil {
		return stepResult{}, nil, err
	}
	res, err := b.runSipp(ctx, spec)
	if err != nil {
		return stepResult{}, res, err
	}
	cpu1, err := srv.CPU()
	if err != nil {
		return stepResult{}, res, fmt.Errorf("%s: %w (did it crash?)", srv.Name(), err)
	}
	st := stepResult{
		Rate: rate, Duration: d, Calls: n,
		Success: res.success, Failed: res.failed, Retrans: res.retrans,
		Wall: res.wall, ServerCPU: cpu1 - cpu0, SippCPU: res.cpu,
	}
	// Sustained: every call succeeded, the run did not fall behind (SIPp
	// throttles new calls when too many are open, which stretches the
	// run; the slack covers SIPp's start and the last transaction), and
	// at most 1 % of the calls needed a retransmission (an answer later
	// than 500 ms): a server that needs them is past its limit.
	limit := time.Duration(float64(d)*1.1) + time.Second
	switch {
	case st.Failed > 0:
		st.Why = fmt.Sprintf("%d failed", st.Failed)
	case st.Success != n:
		st.Why = fmt.Sprintf("%d of %d succeeded (sipp exit %d)", st.Success, n, res.exitCode)
	case st.Wall > limit:
		st.Why = fmt.Sprintf("fell behind: %v for %v of calls", st.Wall.Round(10*time.Millisecond), d)
	case st.Retrans*100 > n:
		st.Why = fmt.Sprintf("%d retransmissions (over 1 %%)", st.Retrans)
	default:
		st.Pass = true
	}
	b.logf("    %-8s %-8s %6d/s %5.1fs: %s (retrans %d, server %v CPU/op, sipp %.2f cores)",
		srv.Name(), kind, rate, d.Seconds(), passText(st), st.Retrans,
		st.CPUPerOp().Round(time.Microsecond/10), st.SippCores())
	return st, res, nil
}

func passText(s stepResult) string {
	if s.Pass {
		return "ok"
	}
	return "FAIL " + s.Why
}

// ramp raises the rate along the ladder until a step fails, then confirms
// the highest passing rate with a longer run, stepping down the ladder
// while the confirming run fails (at most six times).
func (b *bench) ramp(ctx context.Context, srv server, kind, tag string) (rampResult, error) {
	rr := rampResult{Server: srv.Name(), Kind: kind}
	i := slices.Index(ladder, startRate[kind])
	best := -1
	for n := 0; i < len(ladder) && n < len(ladder); n++ {
		st, _, err := b.step(ctx, srv, kind, ladder[i], b.stepDur, fmt.Sprintf("%sr%d", tag, n), false)
		if err != nil {
			return rr, err
		}
		rr.Steps = append(rr.Steps, st)
		if st.Pass {
			best = i
			i++
			continue
		}
		rr.FirstFail = ladder[i]
		if best >= 0 || i == 0 {
			break
		}
		i-- // the start rate failed: go down
	}
	for try := 0; best >= 0 && try < 6; try++ {
		st, _, err := b.step(ctx, srv, kind, ladder[best], b.confirmDur, fmt.Sprintf("%sc%d", tag, try), false)
		if err != nil {
			return rr, err
		}
		rr.Steps = append(rr.Steps, st)
		if st.Pass {
			rr.Max = ladder[best]
			rr.AtMax = &st
			break
		}
		best--
	}
	return rr, nil
}

// latencyResult is the response-time distribution at a fixed rate.
type latencyResult struct {
	Server  string     `json:"server"`
	Kind    string     `json:"kind"`
	Rate    int        `json:"rate"`
	Step    stepResult `json:"step"`
	Samples int        `json:"samples"`
	P50     float64    `json:"p50_ms"`
	P90     float64    `json:"p90_ms"`
	P99     float64    `json:"p99_ms"`
	Max     float64    `json:"max_ms"`
}

func (b *bench) latency(ctx context.Context, srv server, kind string, rate int, tag string) (latencyResult, error) {
	st, res, err := b.step(ctx, srv, kind, rate, b.confirmDur, tag, true)
	if err != nil {
		return latencyResult{}, err
	}
	lr := latencyResult{Server: srv.Name(), Kind: kind, Rate: rate, Step: st}
	v := slices.Clone(res.rttMillis)
	slices.Sort(v)
	lr.Samples = len(v)
	if len(v) > 0 {
		lr.P50, lr.P90, lr.P99, lr.Max = quantile(v, 0.50), quantile(v, 0.90), quantile(v, 0.99), v[len(v)-1]
	}
	b.logf("    %-8s %-8s %6d/s latency: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms (%d samples)",
		srv.Name(), kind, rate, lr.P50, lr.P90, lr.P99, lr.Max, lr.Samples)
	return lr, nil
}

// quantile of sorted v (nearest rank).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// registerCallee registers the UAS's port as "callee" and starts the UAS.
func (b *bench) registerCallee(ctx context.Context, srv server, tag string, budget time.Duration) (*sippProc, error) {
	port, err := freePort("udp4")
	if err != nil {
		return nil, err
	}
	reg, err := b.runSipp(ctx, sippSpec{
		name: fmt.Sprintf("%s-callee-reg-%s", srv.Name(), tag), scenario: "reg_contact.xml",
		remote: srv.Addr(), port: port, expect: time.Second,
		args: []string{"-key", "domain", "example.com", "-s", "callee", "-m", "1"},
	})
	if err != nil {
		return nil, err
	}
	if reg.success != 1 {
		return nil, fmt.Errorf("%s: registering the callee failed; see %s", srv.Name(), reg.dir)
	}
	uas, err := b.startSipp(ctx, sippSpec{
		name: fmt.Sprintf("%s-callee-uas-%s", srv.Name(), tag), scenario: "uas_answer_fast.xml",
		port: port, expect: budget, args: []string{"-aa"},
	})
	if err != nil {
		return nil, err
	}
	// The first INVITE must find it listening.
	err = poll(ctx, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-uas.done:
			return errors.New("the UAS exited")
		default:
		}
		ok, err := udpBound(port)
		if err == nil && !ok {
			err = fmt.Errorf("port %d not bound yet", port)
		}
		return err
	})
	if err != nil {
		uas.stop()
		return nil, fmt.Errorf("%s: UAS: %w; see %s", srv.Name(), err, uas.dir)
	}
	return uas, nil
}
