package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// world is a keyring with its own directory and sockets, for one more
// sealboxd next to the bench's main one.
type world struct {
	dir, keyring, sock, adm string
}

// newWorld makes a keyring under name with admin alice at policy and this
// process's uid registered as client "bench".
func (b *bench) newWorld(name string, policy keyring.Params) (*world, error) {
	w := &world{dir: filepath.Join(b.dir, name)}
	w.keyring, w.sock, w.adm = filepath.Join(w.dir, "k.db"), filepath.Join(w.dir, "s.sock"), filepath.Join(w.dir, "a.sock")
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		return nil, err
	}
	ctx := context.Background()
	secret := make([]byte, b.secretLen)
	rand.Read(secret)
	opts := admin.Options{Policy: &policy, Memory: memlock.Options{AllowUnlocked: true}}
	if err := admin.Init(ctx, w.keyring, "alice", []byte(pw), secret, opts); err != nil {
		return nil, err
	}
	kr, err := keyring.Open(w.keyring, keyring.Options{})
	if err != nil {
		return nil, err
	}
	defer kr.Close()
	uid := uint32(os.Getuid())
	return w, admin.New(kr, opts).AddClient(ctx, "alice", []byte(pw), "bench", admin.Match{UID: &uid})
}

func (b *bench) start(w *world, config string) (*daemonProc, error) {
	return b.startDaemonAt(w.keyring, w.sock, w.adm, config)
}

// procCPU returns the user and system time pid has used, all threads.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it do not.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// arenaKiB returns how much of pid's resident memory is Argon2id working
// memory: mappings marked wipe-on-fork ("wf") at least minKiB large, which
// only internal/argon2id's arenas are.
func arenaKiB(pid int, minKiB int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	total, size, rss := 0, 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "Size:":
			size, _ = strconv.Atoi(fields[1])
		case "Rss:":
			rss, _ = strconv.Atoi(fields[1])
		case "VmFlags:":
			if size >= minKiB && strings.Contains(line, " wf") {
				total += rss
			}
		}
	}
	return total
}

// firstUnseal is what an admin waits for after a boot: a freshly started
// sealboxd, a slot calibrated to 1 s, one unseal. At READY the daemon
// starts faulting in the slot's working memory; the unseal that comes
// right away waits for it, one that comes later finds it ready.
func (b *bench) firstUnseal() error {
	const target = time.Second
	fmt.Fprintln(os.Stderr, "first unseal: calibrating a slot to", target)
	policy := unseal.Calibrate(target, 1<<20, nil)
	w, err := b.newWorld("calibrated", policy)
	if err != nil {
		return err
	}
	defer os.Remove(w.keyring)
	rounds := 3
	if b.quick {
		rounds = 1
	}
	var atReady, later []time.Duration
	peak := 0
	for _, delay := range []time.Duration{0, 2 * time.Second} {
		for range rounds {
			d, err := b.start(w, "")
			if err != nil {
				return err
			}
			time.Sleep(delay)
			ac := api.NewClient(w.adm)
			t0 := time.Now()
			_, err = ac.Unseal(context.Background(), "alice", []byte(pw))
			took := time.Since(t0)
			ac.Close()
			if delay == 0 {
				atReady = append(atReady, took)
				peak = max(peak, rssKiB(d.pid, "VmHWM"))
			} else {
				later = append(later, took)
			}
			d.stop()
			if err != nil {
				return err
			}
		}
	}
	for _, r := range []struct {
		what string
		runs []time.Duration
		goal bool
	}{{"right at READY", atReady, true}, {"2 s after READY (memory kept ready)", later, false}} {
		m := medianD(r.runs)
		ratio := float64(m) / float64(target)
		row := row{Section: "unseal", Metric: fmt.Sprintf("first unseal of a fresh sealboxd, %s (%v)", r.what, policy), Sealbox: ms(m), Baseline: "target " + ms(target), Ratio: ratio}
		if r.goal {
			row.Goal, row.Met = "<= 1.10", met(ratio <= 1.10)
		}
		b.add(row)
	}
	budget := int(policy.MemoryKiB) + 32<<10
	b.add(row{Section: "unseal", Metric: "peak RSS of sealboxd through its first unseal", Sealbox: mib(peak), Baseline: "m " + mib(int(policy.MemoryKiB)),
		Ratio: float64(peak) / float64(policy.MemoryKiB), Goal: "<= m + 32 MiB", Met: met(peak <= budget)})
	b.kdfRows([]kdfParams{{t: int(policy.Time), m: int(policy.MemoryKiB), p: int(policy.Threads)}})
	return nil
}

// kdfRows compares Argon2id cold, one hash per fresh process, wall time
// against wall time: ours (as sealboxd derives) against Debian's argon2
// command and, given --argon2-opt, the reference implementation's
// optimized build.
func (b *bench) kdfRows(sets []kdfParams) {
	self, _ := os.Executable()
	impls := []kdfImpl{{name: "ours", argv: func(k kdfParams) []string {
		return []string{self, "--argon2id-once", strconv.Itoa(k.t), strconv.Itoa(k.m), strconv.Itoa(k.p)}
	}}}
	cli := func(path string) func(kdfParams) []string {
		return func(k kdfParams) []string {
			return []string{path, cmpSalt, "-id", "-t", strconv.Itoa(k.t), "-k", strconv.Itoa(k.m), "-p", strconv.Itoa(k.p), "-l", "32", "-r"}
		}
	}
	type other struct {
		name, goal string
		limit      float64
	}
	var others []other
	if path, err := exec.LookPath("argon2"); err == nil {
		impls = append(impls, kdfImpl{name: "Debian libargon2", argv: cli(path), pipe: true})
		others = append(others, other{"C, Debian libargon2 (argon2 -r)", "<= 1.00", 1.00})
	} else {
		b.add(row{Section: "kdf", Metric: "C, Debian libargon2", Sealbox: "not installed: apt-get install argon2"})
	}
	if b.argon2Opt != "" {
		impls = append(impls, kdfImpl{name: "reference OPTTARGET=native", argv: cli(b.argon2Opt), pipe: true})
		others = append(others, other{"C, reference, OPTTARGET=native (argon2 -r)", "<= 1.15", 1.15})
	} else {
		b.add(row{Section: "kdf", Metric: "C, reference OPTTARGET=native", Sealbox: "not measured: --argon2-opt PATH (scripts/kdf-compare.sh builds it)"})
	}
	rounds := 5
	if b.quick {
		rounds = 2
	}
	for _, k := range sets {
		fmt.Fprintf(os.Stderr, "KDF, cold, %v: ", k)
		runs, err := coldRuns(impls, k, rounds, false)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			b.add(row{Section: "kdf", Metric: fmt.Sprintf("Argon2id %v", k), Sealbox: "error: " + err.Error()})
			continue
		}
		ours := medianWall(runs[0])
		same := true
		for i := range impls {
			for _, s := range runs[i] {
				same = same && s.hash == runs[0][0].hash
			}
		}
		for i, o := range others {
			c := medianWall(runs[i+1])
			r := float64(ours) / float64(c)
			b.add(row{Section: "kdf", Metric: fmt.Sprintf("Argon2id %v, one hash, fresh process: ours vs %s", k, o.name), Sealbox: ms(ours), Baseline: ms(c), Ratio: r, Goal: o.goal, Met: met(r <= o.limit)})
		}
		b.add(row{Section: "kdf", Metric: fmt.Sprintf("Argon2id %v, same hash from every implementation", k), Sealbox: met(same)})
	}
}

func medianWall(s []sample) time.Duration {
	w := make([]time.Duration, len(s))
	for i := range s {
		w[i] = s[i].wall
	}
	return medianD(w)
}

// auditAtCap fills a keyring's read log to its cap (audit_max_records)
// through a real daemon, then measures what a full log costs: start-up to
// READY with the file cached and, as root, after dropping the page cache
// (as after a reboot), resident memory while sealed, and reads against a
// daemon on a fresh keyring.
func (b *bench) auditAtCap() error {
	n := 1_000_000
	if b.quick {
		n = 100_000
	}
	floor := unseal.Floor()
	full, err := b.newWorld("full", floor)
	if err != nil {
		return err
	}
	fresh, err := b.newWorld("fresh", floor)
	if err != nil {
		return err
	}
	cfg := filepath.Join(b.dir, "cap.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "audit_max_records = %d\n", n), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "audit at its cap: %d reads through sealboxd\n", n+n/20)
	d, err := b.start(full, cfg)
	if err != nil {
		return err
	}
	ac := api.NewClient(full.adm)
	_, err = ac.Unseal(context.Background(), "alice", []byte(pw))
	ac.Close()
	if err == nil {
		_, _, err = load(full.sock, 16, n+n/20, true)
	}
	d.stop()
	if err != nil {
		return err
	}
	count := fmt.Sprintf("%d records, file %s", n, fileMiB(full.keyring))

	// Reads: the full keyring against a fresh one, alternated, with the file
	// as writing it left it, in the page cache. (After a reboot, pruning
	// first reads the oldest pages from disk: docs/BENCHMARKS.md.)
	df, err := b.start(full, cfg)
	if err != nil {
		return err
	}
	defer df.stop()
	dn, err := b.start(fresh, cfg)
	if err != nil {
		return err
	}
	defer dn.stop()
	for _, w := range []*world{full, fresh} {
		ac := api.NewClient(w.adm)
		_, err := ac.Unseal(context.Background(), "alice", []byte(pw))
		ac.Close()
		if err != nil {
			return err
		}
	}
	total, rounds := 60000, 5
	if b.quick {
		total, rounds = 10000, 1
	}
	loadProc(full.sock, 16, total/10, true)
	loadProc(fresh.sock, 16, total/10, true)
	var rf, rn []float64
	for range rounds {
		r, _, err := loadProc(full.sock, 16, total, true)
		if err != nil {
			return err
		}
		rf = append(rf, r)
		if r, _, err = loadProc(fresh.sock, 16, total, true); err != nil {
			return err
		}
		rn = append(rn, r)
	}
	df.stop() // before the start-up figures below
	dn.stop()
	ratio := median(rf) / median(rn)
	b.add(row{Section: "audit", Metric: "req/s, 16 keep-alive connections, full log vs a fresh keyring (file cached)", Sealbox: fmt.Sprintf("%.0f", median(rf)), Baseline: fmt.Sprintf("%.0f", median(rn)), Ratio: ratio, Goal: ">= 0.95", Met: met(ratio >= 0.95)})
	var cached, cold []time.Duration
	var sealedRSS, arena, rssFile int
	for i := range 3 {
		d, err := b.start(full, cfg)
		if err != nil {
			return err
		}
		cached = append(cached, d.ready)
		if i == 0 {
			// Let it settle: the arena for the next unseal is faulted in
			// after READY.
			time.Sleep(time.Second)
			sealedRSS, arena, rssFile = rssKiB(d.pid, "VmRSS"), arenaKiB(d.pid, int(floor.MemoryKiB)), rssKiB(d.pid, "RssFile")
		}
		d.stop()
	}
	b.add(row{Section: "audit", Metric: "start-up to READY, file cached (" + count + ")", Sealbox: ms(medianD(cached)), Goal: "<= 50 ms", Met: met(medianD(cached) <= 50*time.Millisecond)})
	if os.Geteuid() == 0 {
		for range 3 {
			if err := dropCaches(); err != nil {
				return err
			}
			d, err := b.start(full, cfg)
			if err != nil {
				return err
			}
			cold = append(cold, d.ready)
			d.stop()
		}
		b.add(row{Section: "audit", Metric: "start-up to READY, page cache dropped", Sealbox: ms(medianD(cold)), Goal: "<= 300 ms", Met: met(medianD(cold) <= 300*time.Millisecond)})
	} else {
		b.add(row{Section: "audit", Metric: "start-up to READY, page cache dropped", Sealbox: "not measured: dropping the page cache needs root"})
	}
	own := sealedRSS - arena
	b.add(row{Section: "audit", Metric: fmt.Sprintf("RSS sealed, besides the Argon2id memory kept ready (%s)", mib(arena)), Sealbox: mib(own), Baseline: "of which file " + mib(rssFile), Goal: "<= 32 MiB", Met: met(own <= 32<<10)})

	return nil
}

// dropCaches writes dirty pages out and drops the page cache, as a reboot
// would leave it.
func dropCaches() error {
	if f, err := os.Open("/"); err == nil {
		f.Sync()
		f.Close()
	}
	exec.Command("sync").Run()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}
