//go:build linux

package netlab

import (
	"errors"
	"fmt"
)

// rule is one iptables rule in one namespace, as the arguments that follow
// -A or -D.
type rule struct {
	ns   string
	spec []string
}

func pairKey(a, b *Host) [2]string {
	if a.NS > b.NS {
		a, b = b, a
	}
	return [2]string{a.NS, b.NS}
}

// Cut drops all traffic between a and b, both ways: in each host's
// namespace, INPUT from and OUTPUT to every address of the other host are
// dropped. Established connections are not reset, they just go silent,
// as with a real link failure. Cutting a cut pair is an error.
func (l *Lab) Cut(a, b *Host) error {
	if a == b {
		return errors.New("cut: a host cannot be cut from itself")
	}
	// Addresses first: Addrs takes l.mu itself.
	var rules []rule
	for _, side := range [][2]*Host{{a, b}, {b, a}} {
		self, peer := side[0], side[1]
		for _, addr := range peer.Addrs() {
			rules = append(rules,
				rule{self.NS, []string{"INPUT", "-s", addr.String(), "-j", "DROP"}},
				rule{self.NS, []string{"OUTPUT", "-d", addr.String(), "-j", "DROP"}})
		}
	}
	key := pairKey(a, b)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("cut: lab is closed")
	}
	if _, ok := l.cuts[key]; ok {
		return fmt.Errorf("cut: %s and %s are already cut", a.Name, b.Name)
	}
	for i, r := range rules {
		if err := r.apply("-A"); err != nil {
			// Leave nothing half done.
			for _, done := range rules[:i] {
				done.apply("-D")
			}
			return fmt.Errorf("cut %s/%s: %w", a.Name, b.Name, err)
		}
	}
	l.cuts[key] = rules
	return nil
}

// Heal removes exactly the rules that Cut(a, b) added.
func (l *Lab) Heal(a, b *Host) error {
	key := pairKey(a, b)
	l.mu.Lock()
	defer l.mu.Unlock()
	rules, ok := l.cuts[key]
	if !ok {
		return fmt.Errorf("heal: %s and %s are not cut", a.Name, b.Name)
	}
	var errs []error
	for _, r := range rules {
		if err := r.apply("-D"); err != nil {
			errs = append(errs, err)
		}
	}
	delete(l.cuts, key)
	return errors.Join(errs...)
}

func (r rule) apply(op string) error {
	return run(append([]string{"ip", "netns", "exec", r.ns, "iptables", "-w", "5", op}, r.spec...)...)
}
