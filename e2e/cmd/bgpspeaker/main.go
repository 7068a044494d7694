// Command bgpspeaker runs the bgp package's speaker (GoBGP and BFD) alone,
// for the end-to-end tests: started inside a network namespace, it peers
// with the lab's BIRD router and announces the prefixes of its config
// file.
//
//	bgpspeaker -config speaker.yaml
//
// SIGHUP re-reads the prefixes (and only the prefixes) from the file and
// applies them with Set. SIGTERM withdraws everything, waits briefly for
// the routers to be told, and exits 0.
//
// The config file is YAML: `log_level` (debug, info) and a `bgp` section
// that is bgp.Config.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyedge/anyedge/bgp"
)

type fileConfig struct {
	LogLevel string     `yaml:"log_level"`
	BGP      bgp.Config `yaml:"bgp"`
}

func load(path string) (fileConfig, error) {
	var c fileConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.BGP.Validate(); err != nil {
		return c, fmt.Errorf("%s: bgp.%w", path, err)
	}
	return c, nil
}

func main() {
	path := flag.String("config", "", "config file (YAML)")
	flag.Parse()
	if err := run(*path); err != nil {
		fmt.Fprintln(os.Stderr, "bgpspeaker:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	cfg, err := load(path)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.LogLevel == "debug" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	sp, err := bgp.New(cfg.BGP, bgp.WithLogger(log), bgp.WithPeerHook(func(p bgp.PeerStatus) {
		log.Info("peer", "addr", p.Address, "state", p.State.String(), "bfd", p.BFD.String(), "last_error", p.LastError)
	}))
	if err != nil {
		return err
	}
	defer sp.Close()
	set := func(advs []bgp.Advertisement) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sp.Set(ctx, advs...); err != nil {
			log.Error("set", "err", err)
			return
		}
		log.Info("set", "announced", fmt.Sprint(sp.Announced()))
	}
	set(cfg.BGP.Advertisements())
	log.Info("running", "pid", os.Getpid())

	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			c, err := load(path)
			if err != nil {
				log.Error("reload", "err", err)
				continue
			}
			set(c.BGP.Advertisements())
		default:
			log.Info("withdrawing before exit", "signal", sig.String())
			set(nil)
			// Give the UPDATEs a moment to leave before the sessions close
			// (the routers would drop the paths at the close anyway).
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) && sent(sp) > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			return sp.Close()
		}
	}
	return nil
}

func sent(sp bgp.Speaker) uint64 {
	var n uint64
	for _, p := range sp.Peers() {
		if p.Established() {
			n += p.PrefixesSent
		}
	}
	return n
}
