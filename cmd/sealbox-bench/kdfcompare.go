package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/sealbox/sealbox/internal/argon2id"
)

// The inputs of every --kdf-compare hash: the argon2 command reads the
// password from stdin and takes the salt as an argument.
const (
	cmpPassword = "password"
	cmpSalt     = "somesaltsomesalt"
)

// kdfParams is one Argon2id parameter set.
type kdfParams struct{ t, m, p int }

func (k kdfParams) String() string { return fmt.Sprintf("t=%d m=%dKiB p=%d", k.t, k.m, k.p) }

// kdfImpl is one implementation, run as a fresh process per hash.
type kdfImpl struct {
	name string
	// argv for a parameter set; stdin gets the password when pipe is set.
	argv func(k kdfParams) []string
	pipe bool
}

// command is argv as a shell command line, to print next to its figure.
func (c kdfImpl) command(k kdfParams) string {
	s := strings.Join(c.argv(k), " ")
	if c.pipe {
		s = "printf " + cmpPassword + " | " + s
	}
	return s
}

// sample is one process: its wall time (start to exit), CPU time (user and
// system, all threads), peak RSS and hash.
type sample struct {
	wall, cpu time.Duration
	rss       int // KiB
	hash      string
}

func (c kdfImpl) run(k kdfParams) (sample, error) {
	argv := c.argv(k)
	cmd := exec.Command(argv[0], argv[1:]...)
	if c.pipe {
		cmd.Stdin = strings.NewReader(cmpPassword)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %v: %s", c.command(k), err, out.String())
	}
	f := strings.Fields(out.String())
	if len(f) == 0 {
		return sample{}, fmt.Errorf("%s: no output", c.command(k))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return sample{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), rss: int(ru.Maxrss), hash: f[0]}, nil
}

// argon2idOnce is the --argon2id-once child: one derivation with this
// package's Argon2id and a temporary arena, as a daemon's first unseal.
func argon2idOnce(args []string) {
	t, _ := strconv.Atoi(args[0])
	m, _ := strconv.Atoi(args[1])
	p, _ := strconv.Atoi(args[2])
	h := make([]byte, 32)
	t0 := time.Now()
	if err := argon2id.Derive(h, []byte(cmpPassword), []byte(cmpSalt), uint32(t), uint32(m), uint8(p), nil, nil); err != nil {
		fail(err)
	}
	fmt.Printf("%s %d\n", hex.EncodeToString(h), time.Since(t0).Nanoseconds())
}

// kdfWarm is the --argon2id-warm and --argon2-warm child: n timed
// derivations after an untimed one, in one process; it prints the hash and
// each time in ns. Ours keeps one prefaulted arena; for x/crypto the
// previous derivation's memory is collected (untimed) before each, so that
// it is reused rather than the heap grown, as unseal.Calibrate times it.
func kdfWarm(ours bool, args []string) {
	t, _ := strconv.Atoi(args[0])
	m, _ := strconv.Atoi(args[1])
	p, _ := strconv.Atoi(args[2])
	n, _ := strconv.Atoi(args[3])
	pw, salt := []byte(cmpPassword), []byte(cmpSalt)
	h := make([]byte, 32)
	derive := func() {
		h = argon2.IDKey(pw, salt, uint32(t), uint32(m), uint8(p), 32)
	}
	if ours {
		a, err := argon2id.NewArena(uint32(m), uint8(p))
		if err != nil {
			fail(err)
		}
		defer a.Release()
		if err := a.Prefault(); err != nil {
			fail(err)
		}
		derive = func() {
			if err := argon2id.Derive(h, pw, salt, uint32(t), uint32(m), uint8(p), a, nil); err != nil {
				fail(err)
			}
		}
	}
	derive()
	times := make([]string, n)
	for i := range times {
		runtime.GC()
		t0 := time.Now()
		derive()
		times[i] = strconv.FormatInt(time.Since(t0).Nanoseconds(), 10)
	}
	fmt.Println(hex.EncodeToString(h), strings.Join(times, " "))
}

// kdfCompare is --kdf-compare: Argon2id in fresh processes, one hash each,
// this repository's implementation against x/crypto/argon2, Debian's
// argon2 command (libargon2 20171227) and the reference implementation's
// optimized build; then warm derivations in one process, ours against
// x/crypto. Rounds alternate the implementations (rotating which goes
// first) and medians are reported.
func kdfCompare(args []string) {
	fs := flag.NewFlagSet("sealbox-bench --kdf-compare", flag.ExitOnError)
	rounds := fs.Int("rounds", 7, "alternated rounds per parameter set; medians are reported")
	debian := fs.String("argon2", "/usr/bin/argon2", "Debian's argon2 `command` (apt-get install argon2)")
	opt := fs.String("argon2-opt", "", "the reference implementation's argon2 `command`, built with make OPTTARGET=native (scripts/kdf-compare.sh builds it)")
	params := fs.String("params", "3,65536,4 3,662528,4", "parameter sets `t,m,p ...` (m in KiB)")
	warmN := fs.Int("warm", 3, "timed warm derivations per process (0: skip the warm comparison)")
	idle := fs.Bool("idle", true, "before each round, wait (up to a minute) for the machine to be idle: other work on a shared machine moves wall times by more than the differences measured")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: sealbox-bench --kdf-compare [--argon2-opt PATH] [--rounds N] [--params 't,m,p ...']")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	var sets []kdfParams
	for _, s := range strings.Fields(*params) {
		var k kdfParams
		if _, err := fmt.Sscanf(s, "%d,%d,%d", &k.t, &k.m, &k.p); err != nil {
			fail(fmt.Errorf("--params %q: %v", s, err))
		}
		sets = append(sets, k)
	}
	rel := self
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, self); err == nil && !strings.HasPrefix(r, "..") {
			rel = "./" + r
		}
	}
	child := func(mode string) func(kdfParams) []string {
		return func(k kdfParams) []string {
			return []string{rel, mode, strconv.Itoa(k.t), strconv.Itoa(k.m), strconv.Itoa(k.p)}
		}
	}
	cli := func(path string) func(kdfParams) []string {
		return func(k kdfParams) []string {
			// -r: print the raw hash and stop; without it the command also
			// verifies, which is a second hash.
			return []string{path, cmpSalt, "-id", "-t", strconv.Itoa(k.t), "-k", strconv.Itoa(k.m), "-p", strconv.Itoa(k.p), "-l", "32", "-r"}
		}
	}
	impls := []kdfImpl{{name: "ours (internal/argon2id)", argv: child("--argon2id-once")}, {name: "x/crypto/argon2", argv: child("--argon2-once")}}
	const debianName, optName = "C, Debian libargon2", "C, reference OPTTARGET=native"
	if _, err := os.Stat(*debian); err == nil {
		impls = append(impls, kdfImpl{name: debianName, argv: cli(*debian), pipe: true})
	} else {
		fmt.Fprintf(os.Stderr, "sealbox-bench: warning: %v; hint: apt-get install argon2\n", err)
	}
	if *opt != "" {
		impls = append(impls, kdfImpl{name: optName, argv: cli(*opt), pipe: true})
	} else {
		fmt.Fprintln(os.Stderr, "sealbox-bench: warning: no --argon2-opt; hint: scripts/kdf-compare.sh builds the reference implementation")
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "Argon2id, one hash per fresh process, wall time from start to exit; %d alternated rounds, median [min..max]\n", *rounds)
	fmt.Fprintf(tw, "PARAMS\tIMPLEMENTATION\tWALL\tCPU\tPEAK RSS\tCOMMAND\n")
	busyRounds = 0
	for _, k := range sets {
		fmt.Fprintf(os.Stderr, "cold, %v: ", k)
		runs, err := coldRuns(impls, k, *rounds, *idle)
		if err != nil {
			fail(err)
		}
		fmt.Fprintln(os.Stderr)
		med := make([]time.Duration, len(impls))
		same := true
		for i, c := range impls {
			walls := make([]time.Duration, len(runs[i]))
			cpus := make([]time.Duration, len(runs[i]))
			rss := 0
			for j, s := range runs[i] {
				walls[j], cpus[j], rss = s.wall, s.cpu, max(rss, s.rss)
				same = same && s.hash == runs[0][0].hash
			}
			slices.Sort(walls)
			med[i] = walls[len(walls)/2]
			fmt.Fprintf(tw, "%v\t%s\t%s [%s..%s]\t%s\t%s\t%s\n", k, c.name, ms(med[i]), ms(walls[0]), ms(walls[len(walls)-1]), ms(medianD(cpus)), mib(rss), c.command(k))
		}
		ours := med[0]
		for i, c := range impls[1:] {
			goal := ""
			switch c.name {
			case optName:
				goal = fmt.Sprintf("goal <= 1.15: %s", met(float64(ours)/float64(med[i+1]) <= 1.15))
			case debianName:
				goal = fmt.Sprintf("goal <= 1.00: %s", met(ours <= med[i+1]))
			}
			fmt.Fprintf(tw, "%v\tratio ours / %s\t%.2f\t\t\t%s\n", k, c.name, float64(ours)/float64(med[i+1]), goal)
		}
		oursRSS := 0
		for _, s := range runs[0] {
			oursRSS = max(oursRSS, s.rss)
		}
		fmt.Fprintf(tw, "%v\tpeak RSS ours - m\t%s\t\t\tgoal <= 32 MiB: %s\n", k, mib(oursRSS-k.m), met(oursRSS-k.m <= 32<<10))
		fmt.Fprintf(tw, "%v\tsame hash from all\t%s\t\t\t\n", k, met(same))
	}
	if busyRounds > 0 {
		fmt.Fprintf(tw, "warning: %d rounds ran while the machine was busy\n", busyRounds)
		busyRounds = 0
	}
	if *warmN <= 0 {
		return
	}
	tw.Flush()
	fmt.Fprintf(tw, "\nArgon2id, warm: %d timed derivations after an untimed one, in one process, per round; 3 alternated rounds, median\n", *warmN)
	fmt.Fprintf(tw, "PARAMS\tIMPLEMENTATION\tPER HASH\t\tCOMMAND\n")
	for _, k := range sets {
		fmt.Fprintf(os.Stderr, "warm, %v: ", k)
		modes := []struct{ name, mode string }{{"ours, prefaulted arena kept", "--argon2id-warm"}, {"x/crypto/argon2, heap kept", "--argon2-warm"}}
		var med [2]time.Duration
		var hashes [2]string
		var times [2][]time.Duration
		for r := range 3 {
			if *idle && !waitIdle(time.Minute) {
				busyRounds++
			}
			for j := range modes {
				i := (j + r) % 2
				argv := []string{self, modes[i].mode, strconv.Itoa(k.t), strconv.Itoa(k.m), strconv.Itoa(k.p), strconv.Itoa(*warmN)}
				out, err := exec.Command(argv[0], argv[1:]...).Output()
				if err != nil {
					fail(fmt.Errorf("%s: %v", strings.Join(argv, " "), err))
				}
				f := strings.Fields(string(out))
				hashes[i] = f[0]
				for _, s := range f[1:] {
					ns, _ := strconv.ParseInt(s, 10, 64)
					times[i] = append(times[i], time.Duration(ns))
				}
			}
			fmt.Fprint(os.Stderr, ".")
		}
		fmt.Fprintln(os.Stderr)
		for i, m := range modes {
			med[i] = medianD(times[i])
			fmt.Fprintf(tw, "%v\t%s\t%s\t\t%s %s %d %d %d %d\n", k, m.name, ms(med[i]), rel, m.mode, k.t, k.m, k.p, *warmN)
		}
		fmt.Fprintf(tw, "%v\tratio ours / x/crypto, warm\t%.2f\t\t\n", k, float64(med[0])/float64(med[1]))
		fmt.Fprintf(tw, "%v\tsame hash\t%s\t\t\n", k, met(hashes[0] == hashes[1]))
	}
	if busyRounds > 0 {
		fmt.Fprintf(tw, "warning: %d rounds ran while the machine was busy\n", busyRounds)
	}
}

// coldRuns runs each implementation rounds times on k, one hash per fresh
// process, alternating them (rotating which goes first); with idle it first
// waits for the machine to be idle each round. runs[i] are impls[i]'s.
func coldRuns(impls []kdfImpl, k kdfParams, rounds int, idle bool) ([][]sample, error) {
	runs := make([][]sample, len(impls))
	for r := range rounds {
		if idle && !waitIdle(time.Minute) {
			busyRounds++
		}
		for j := range impls {
			i := (j + r) % len(impls)
			s, err := impls[i].run(k)
			if err != nil {
				return nil, err
			}
			runs[i] = append(runs[i], s)
		}
		fmt.Fprint(os.Stderr, ".")
	}
	return runs, nil
}

// busyRounds counts rounds that ran while the machine was busy.
var busyRounds int

// waitIdle waits until the machine's CPUs were at least 90% idle over one
// second, for at most limit; it reports whether they were.
func waitIdle(limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		busy1, total1 := cpuTicks()
		time.Sleep(time.Second)
		busy2, total2 := cpuTicks()
		if total2 > total1 && (busy2-busy1)*10 < total2-total1 {
			return true
		}
	}
	return false
}

// cpuTicks reads the busy and total ticks of all CPUs from /proc/stat.
func cpuTicks() (busy, total uint64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}
