package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which is 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procStat is what we read from /proc/PID/stat.
type procStat struct {
	ppid      int
	cpu       time.Duration // utime + stime
	startTime uint64        // in clock ticks since boot: tells a reused PID apart
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) may hold blanks and parentheses: the
	// fields after it start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(field int) uint64 {
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	return procStat{
		ppid:      int(num(4)),
		cpu:       time.Duration(num(14)+num(15)) * clockTick,
		startTime: num(22),
	}, nil
}

// rssBytes is VmRSS from /proc/PID/status.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fs := strings.Fields(rest) // "123456 kB"
			if len(fs) != 2 || fs[1] != "kB" {
				return 0, fmt.Errorf("VmRSS: %q", rest)
			}
			kb, err := strconv.ParseInt(fs[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// children lists the direct children of pid, with their start times.
func children(pid int) (map[int]uint64, error) {
	ents, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	out := map[int]uint64{}
	for _, e := range ents {
		n, err := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		if err != nil {
			continue
		}
		st, err := readStat(n)
		if err != nil {
			continue // exited meanwhile
		}
		if st.ppid == pid {
			out[n] = st.startTime
		}
	}
	return out, nil
}

// sameProcess reports whether pid still is the process that started at
// startTime (and not a reused PID).
func sameProcess(pid int, startTime uint64) bool {
	st, err := readStat(pid)
	return err == nil && st.startTime == startTime
}

// udpBound reports whether something listens on 127.0.0.1:port (UDP), from
// /proc/net/udp. Reading it needs no socket of our own, so it cannot steal
// the port from the process we wait for.
func udpBound(port int) (bool, error) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return false, err
	}
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && strings.HasSuffix(f[1], want) {
			return true, nil
		}
	}
	return false, nil
}
