//go:build linux

// Command netlab-purge removes the namespaces (and any root-namespace
// links) of a netlab lab whose test binary died before it could clean up.
// The lab prefix is printed by each test at lab creation.
//
//	go run ./e2e/netlab/cmd/netlab-purge -prefix ae1f3c9
//	go run ./e2e/netlab/cmd/netlab-purge -list
//
// It kills nothing: processes still inside a namespace are listed, for the
// operator to deal with (netlab starts them with a parent-death signal, so
// normally there are none).
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/anyedge/anyedge/e2e/netlab"
)

var labNS = regexp.MustCompile(`^ae[0-9a-f]{5}-`)

func main() {
	prefix := flag.String("prefix", "", "lab prefix to remove, for example ae1f3c9")
	list := flag.Bool("list", false, "list namespaces that look like netlab labs, remove nothing")
	flag.Parse()

	if *list {
		for _, ns := range netlab.Prefixed("ae") {
			if labNS.MatchString(ns) {
				fmt.Println(ns, strings.Join(netlab.PIDs(ns), " "))
			}
		}
		return
	}
	if !regexp.MustCompile(`^ae[0-9a-f]{5}$`).MatchString(*prefix) {
		fmt.Fprintln(os.Stderr, "netlab-purge: -prefix must look like ae1f3c9")
		os.Exit(2)
	}
	for _, ns := range netlab.Prefixed(*prefix + "-") {
		if pids := netlab.PIDs(ns); len(pids) > 0 {
			fmt.Fprintf(os.Stderr, "netlab-purge: %s still has processes: %s\n", ns, strings.Join(pids, " "))
		}
	}
	if err := netlab.Purge(*prefix); err != nil {
		fmt.Fprintln(os.Stderr, "netlab-purge:", err)
		os.Exit(1)
	}
}
