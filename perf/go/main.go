// Command mpgbench is the Go peer of mpg's benchmark program (perf/mpg_bench).
//
// It speaks the protocol every program under perf/ speaks:
//
//	mpgbench WORKLOAD [N]
//
// runs one workload once and prints exactly one line to stdout:
//
//	RESULT workload=<name> impl=go ops=<count> ns_per_op=<float> wall_ms=<float> peak_rss_kb=<int> check=<ok|FAIL>
//
// idle_tasks adds bytes_per_task=<float>. An unknown workload exits with
// status 2 and prints no RESULT line; a failed self-check exits with status 1
// after printing its RESULT line with check=FAIL.
//
// The workloads and what one "op" is are defined in docs/benchmarks.md
// (summarised in README.md). N is the workload's size; its meaning per workload
// is in the table below (the defaults are the docs/benchmarks.md sizes).
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// result is what one workload run reports besides its wall time.
type result struct {
	ops          int64   // number of ops the ns_per_op figure divides by
	ok           bool    // the workload's self-check
	bytesPerTask float64 // idle_tasks only; < 0 when not reported
}

type workload struct {
	defaultN int64
	run      func(n int64) result
	nMeaning string
}

// workloads maps a name to its implementation. Keep in step with run.py.
var workloads = map[string]workload{
	"spawn_join":       {1_000_000, spawnJoin, "tasks"},
	"skynet":           {1_000_000, skynet, "leaves (a power of 10)"},
	"fib":              {30, fib, "the argument of fib"},
	"fib32":            {32, fib, "the argument of fib"},
	"yield_ping":       {1_000_000, yieldPing, "switches"},
	"pingpong":         {1_000_000, pingPong, "round trips"},
	"chan_mpmc":        {10_000_000, chanMPMC, "items"},
	"mutex_contention": {2_000_000, mutexContention, "lock+increment ops in all (8 goroutines)"},
	"idle_tasks":       {1_000_000, idleTasks, "blocked goroutines"},
}

// peakRSSKB returns the process's peak resident set size in KiB
// (getrusage(RUSAGE_SELF).ru_maxrss; Linux reports it in KiB).
func peakRSSKB() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return int64(ru.Maxrss)
}

func usage() {
	names := make([]string, 0, len(workloads))
	for name := range workloads {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s WORKLOAD [N]\nworkloads:\n", os.Args[0])
	for _, name := range names {
		w := workloads[name]
		fmt.Fprintf(os.Stderr, "  %-17s N = %s (default %d)\n", name, w.nMeaning, w.defaultN)
	}
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	w, found := workloads[name]
	if !found {
		fmt.Fprintf(os.Stderr, "unknown workload %q\n", name)
		usage()
		os.Exit(2)
	}
	n := w.defaultN
	if len(os.Args) == 3 {
		v, err := strconv.ParseInt(os.Args[2], 10, 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "bad N %q\n", os.Args[2])
			os.Exit(2)
		}
		n = v
	}

	start := time.Now()
	r := w.run(n)
	wall := time.Since(start)

	check := "ok"
	if !r.ok {
		check = "FAIL"
	}
	line := fmt.Sprintf("RESULT workload=%s impl=go ops=%d ns_per_op=%.3f wall_ms=%.3f peak_rss_kb=%d check=%s",
		name, r.ops, float64(wall.Nanoseconds())/float64(r.ops),
		float64(wall.Nanoseconds())/1e6, peakRSSKB(), check)
	if r.bytesPerTask >= 0 {
		line += fmt.Sprintf(" bytes_per_task=%.1f", r.bytesPerTask)
	}
	fmt.Println(line)
	if !r.ok {
		os.Exit(1)
	}
}
