package main

// The daemon under systemd: the unit's hardening and syscall filter, make
// install, and a container booted by the real systemd.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/internal/testbin"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/unattended"
)

func TestUnitExposureScore(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testbin.Require(t, "systemd-analyze is not installed (.ci/run installs it)")
	}
	// sealboxd, and the helpers that have what it has not: the network
	// (Tang) and the TPM device.
	for _, name := range []string{"sealboxd.service", "sealbox-tang@.service", "sealbox-tpm2@.service"} {
		unit, _ := filepath.Abs(filepath.Join("..", "..", name))
		r := runCmd(t, "", "systemd-analyze", "security", "--offline=yes", "--no-pager", unit)
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(r.out)
		if m == nil {
			t.Fatalf("%s: no score in:\n%s", name, r.out)
		}
		score, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("%s: exposure %.1f", name, score)
		if score > 1.0 {
			t.Fatalf("%s: exposure %.1f > 1.0:\n%s", name, score, r.out)
		}
	}
	// The directives the daemon's correctness depends on.
	unit, _ := filepath.Abs(filepath.Join("..", "..", "sealboxd.service"))
	raw, _ := os.ReadFile(unit)
	for _, want := range []string{"Type=notify", "LimitCORE=0", "LimitMEMLOCK=", "MemorySwapMax=0", "RestrictAddressFamilies=AF_UNIX\n", "PrivateNetwork=yes", "PrivateDevices=yes", "User=sealbox"} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("unit lacks %s", strings.TrimSpace(want))
		}
	}
	if bytes.Contains(raw, []byte("\nPrivateUsers=yes")) {
		t.Error("PrivateUsers=yes would map every client uid to nobody")
	}
	// The helpers: only sealboxd's unit may connect (it alone holds the
	// sockets' group); the Tang helper has no device and the TPM helper no
	// network.
	for name, wants := range map[string][]string{
		"sealboxd.service":      {"SupplementaryGroups=sealbox-unattended\n"},
		"sealbox-tang.socket":   {"SocketUser=root", "SocketGroup=sealbox-unattended", "SocketMode=0660", "Accept=yes", "ListenStream=/run/sealbox-unattended/tang.sock"},
		"sealbox-tpm2.socket":   {"SocketUser=root", "SocketGroup=sealbox-unattended", "SocketMode=0660", "Accept=yes", "ListenStream=/run/sealbox-unattended/tpm2.sock"},
		"sealbox-tang@.service": {"DynamicUser=yes\n", "PrivateDevices=yes", "IPAddressDeny=any", "RestrictAddressFamilies=AF_INET AF_INET6\n", "--kind tang"},
		"sealbox-tpm2@.service": {"DynamicUser=yes\n", "PrivateNetwork=yes", "RestrictAddressFamilies=none", "DeviceAllow=/dev/tpmrm0 rw", "--kind tpm2"},
	} {
		raw, _ := os.ReadFile(filepath.Join("..", "..", name))
		for _, want := range wants {
			if !bytes.Contains(raw, []byte(want)) {
				t.Errorf("%s lacks %s", name, strings.TrimSpace(want))
			}
		}
	}
}

// TestDaemonSyscallsWithinUnitFilter traces every system call a full daemon
// session makes and checks each against the unit's SystemCallFilter= lines,
// expanded by systemd-analyze: a call outside the filter would kill the
// daemon under systemd (SIGSYS), where no other test here can run it.
func TestDaemonSyscallsWithinUnitFilter(t *testing.T) {
	for _, tool := range []string{"strace", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, "needs "+tool+" (.ci/run installs it)")
		}
	}
	requireRootTools(t)
	t.Parallel()
	plain, err := testbin.Build("sealboxd", false) // the race runtime makes calls production does not
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	trace := filepath.Join(e.dir, "trace")
	e.startBin(plain, []string{"strace", "-f", "-qq", "-o", trace})
	e.expectRead(nobody, 503)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.expectRead(nobody, 200)
	e.read(nobody, "/v1/status?wait=1s")
	e.online(0, pwAlice+"\n", "client", "disable", "svc", "--as", "alice")
	e.online(0, pwAlice+"\n"+pwCarol+"\n", "add", "carol", "--as", "alice")
	e.online(0, "", "seal")
	syscall.Kill(e.pid, syscall.SIGHUP)
	time.Sleep(200 * time.Millisecond)
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d:\n%s", code, e.log.String())
	}
	raw, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\d+\s+([a-z0-9_]+)\(`).FindAllStringSubmatch(string(raw), -1) {
		used[m[1]] = true
	}
	if !used["mlock"] || !used["accept4"] {
		t.Fatalf("trace looks incomplete: %d calls, mlock %v accept4 %v", len(used), used["mlock"], used["accept4"])
	}
	checkWithinFilter(t, "sealboxd.service", used)
}

// checkWithinFilter fails t for any call in used that the unit's
// SystemCallFilter= lines (expanded by systemd-analyze) would kill for.
func checkWithinFilter(t *testing.T, unitName string, used map[string]bool) {
	t.Helper()
	unit, _ := os.ReadFile(filepath.Join("..", "..", unitName))
	allow, deny := map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(string(unit), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "SystemCallFilter=")
		if !ok {
			continue
		}
		set := allow
		if strings.HasPrefix(v, "~") {
			set, v = deny, v[1:]
		}
		for _, item := range strings.Fields(v) {
			expandFilter(t, item, set)
		}
	}
	var bad []string
	for call := range used {
		if !allow[call] || deny[call] {
			bad = append(bad, fmt.Sprintf("%s (allowed %v, denied %v)", call, allow[call], deny[call]))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("system calls %s's filter would kill for: %v", unitName, bad)
	}
	t.Logf("%s: %d distinct system calls, all within the unit's filter", unitName, len(used))
}

// TestHelperSyscallsWithinUnitFilter traces the helpers as their units run
// them, children included (tpm2-tools): a Tang exchange against the real
// tangd, and a TPM seal, unseal and PCR check against swtpm. Every call
// must be within its unit's SystemCallFilter=, or systemd would kill it.
func TestHelperSyscallsWithinUnitFilter(t *testing.T) {
	for _, tool := range []string{"strace", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, "needs "+tool+" (.ci/run installs it)")
		}
	}
	t.Parallel()
	bin, err := testbin.Build("sealbox-admin", false)
	if err != nil {
		t.Fatal(err)
	}
	tg := fleettest.StartTang(t)
	tpm := fleettest.StartSWTPM(t)
	dir := t.TempDir()
	kek := bytes.Repeat([]byte{7}, 32)
	adv, err := tang.Fetch(t.Context(), tang.Client(time.Second), tg.URL)
	if err != nil {
		t.Fatal(err)
	}
	jwe, err := tang.Encrypt(adv, kek)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(trace string, req unattended.HelperRequest, args ...string) unattended.HelperResponse {
		t.Helper()
		b, _ := json.Marshal(&req)
		cmd := exec.Command("strace", append([]string{"-f", "-qq", "-o", trace, bin, "unattended-helper"}, args...)...)
		// As systemd's Accept=yes runs it: stdin and stdout are the
		// connection (a socket), so the trace covers its deadline too.
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		mine, theirs := os.NewFile(uintptr(fds[0]), "client"), os.NewFile(uintptr(fds[1]), "helper")
		defer mine.Close()
		cmd.Stdin, cmd.Stdout = theirs, theirs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		theirs.Close()
		mine.Write(append(b, '\n'))
		out, err := io.ReadAll(mine)
		if werr := cmd.Wait(); err == nil {
			err = werr
		}
		var resp unattended.HelperResponse
		if err != nil || json.Unmarshal(out, &resp) != nil || resp.Code != "" {
			t.Fatalf("helper %v: %v %s %+v", args, err, out, resp)
		}
		return resp
	}
	calls := func(traces ...string) map[string]bool {
		used := map[string]bool{}
		for _, tr := range traces {
			raw, err := os.ReadFile(tr)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range regexp.MustCompile(`(?m)^\d+\s+([a-z0-9_]+)\(`).FindAllStringSubmatch(string(raw), -1) {
				used[m[1]] = true
			}
		}
		return used
	}
	tr := filepath.Join(dir, "tang")
	if resp := serve(tr, unattended.HelperRequest{Op: "open", Kind: "tang", Binding: jwe, TimeoutMS: 5000}, "--kind", "tang"); !bytes.Equal(resp.Key, kek) {
		t.Fatal("the tang helper recovered a wrong key")
	}
	if used := calls(tr); !used["connect"] {
		t.Fatalf("tang trace looks incomplete: %d calls", len(used))
	} else {
		checkWithinFilter(t, "sealbox-tang@.service", used)
	}
	tcti := []string{"--kind", "tpm2", "--tcti", tpm.TCTI()}
	sealT, openT, driftT := filepath.Join(dir, "seal"), filepath.Join(dir, "open"), filepath.Join(dir, "drift")
	sealed := serve(sealT, unattended.HelperRequest{Op: "seal", Kind: "tpm2", Plaintext: kek, PCRs: []int{7}, TimeoutMS: 20000}, tcti...)
	if resp := serve(openT, unattended.HelperRequest{Op: "open", Kind: "tpm2", Binding: sealed.Binding, TimeoutMS: 20000}, tcti...); !bytes.Equal(resp.Key, kek) {
		t.Fatal("the tpm2 helper unsealed a wrong key")
	}
	serve(driftT, unattended.HelperRequest{Op: "drifted", Kind: "tpm2", Binding: sealed.Binding, TimeoutMS: 20000}, tcti...)
	used := calls(sealT, openT, driftT)
	if !used["execve"] || !used["pipe2"] {
		t.Fatalf("tpm2 trace looks incomplete: %d calls", len(used))
	}
	checkWithinFilter(t, "sealbox-tpm2@.service", used)
}

// expandFilter adds a syscall or a @group (recursively) to set.
func expandFilter(t *testing.T, item string, set map[string]bool) {
	t.Helper()
	if !strings.HasPrefix(item, "@") {
		set[item] = true
		return
	}
	r := runCmd(t, "", "systemd-analyze", "syscall-filter", "--no-pager", item)
	if r.code != 0 {
		t.Fatalf("systemd-analyze syscall-filter %s: %s", item, r.out)
	}
	for _, line := range strings.Split(r.out, "\n") {
		f := strings.TrimSpace(line)
		if f == "" || strings.HasPrefix(f, "#") || strings.Contains(f, " ") || f == item {
			continue
		}
		if strings.HasPrefix(f, "@") {
			expandFilter(t, f, set)
		} else {
			set[f] = true
		}
	}
}

func TestMakeInstallAndUninstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		testbin.Require(t, "needs make")
	}
	t.Parallel()
	stage, bin := t.TempDir(), t.TempDir()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	makeIt := func(target string) string {
		cmd := exec.Command("make", "-C", root, target, "DESTDIR="+stage, "PREFIX=/usr", "BIN="+bin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	makeIt("install")
	for path, mode := range map[string]os.FileMode{
		"usr/bin/sealboxd": 0o755, "usr/bin/sealbox-admin": 0o755, "usr/bin/sealbox": 0o755,
		// With DESTDIR (a package), units go where packages put them.
		"usr/lib/systemd/system/sealboxd.service": 0o644, "etc/sealbox/sealboxd.toml": 0o644,
		"usr/lib/sysusers.d/sealbox.conf": 0o644, "usr/lib/tmpfiles.d/sealbox.conf": 0o644,
		"usr/share/doc/sealbox/operations.md": 0o644,
		"usr/share/man/man8/sealbox-admin.8":  0o644, "usr/share/man/man5/sealboxd.toml.5": 0o644,
		"usr/share/man/man1/sealbox.1":                        0o644,
		"usr/share/bash-completion/completions/sealbox-admin": 0o644,
		"usr/share/zsh/vendor-completions/_sealbox-admin":     0o644,
		"usr/share/fish/vendor_completions.d/sealbox.fish":    0o644,
	} {
		st, err := os.Stat(filepath.Join(stage, path))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, st, err, mode)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(stage, "usr/lib/systemd/system/sealboxd.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/sealboxd --config /etc/sealbox/sealboxd.toml") {
		t.Errorf("unit ExecStart not adjusted to PREFIX:\n%s", unit)
	}
	if su, _ := os.ReadFile(filepath.Join(stage, "usr/lib/sysusers.d/sealbox.conf")); !strings.Contains(string(su), "\nu sealbox ") {
		t.Errorf("sysusers entry: %q", su)
	}
	if tf, _ := os.ReadFile(filepath.Join(stage, "usr/lib/tmpfiles.d/sealbox.conf")); !strings.Contains(string(tf), "\nd /var/lib/sealbox 0700 sealbox sealbox -") {
		t.Errorf("tmpfiles entry: %q", tf)
	}
	// An operator's configuration survives a reinstall and an uninstall.
	cfg := filepath.Join(stage, "etc/sealbox/sealboxd.toml")
	os.WriteFile(cfg, []byte("log_level = \"debug\"\n"), 0o644)
	if out := makeIt("install"); !strings.Contains(out, "keeping") {
		t.Errorf("reinstall did not say it kept the config:\n%s", out)
	}
	makeIt("uninstall")
	if b, _ := os.ReadFile(cfg); string(b) != "log_level = \"debug\"\n" {
		t.Errorf("config after uninstall: %q", b)
	}
	for _, gone := range []string{"usr/bin/sealboxd", "usr/lib/systemd/system/sealboxd.service", "usr/share/doc/sealbox",
		"usr/share/man/man8/sealboxd.8", "usr/share/bash-completion/completions/sealbox", "usr/lib/tmpfiles.d/sealbox.conf"} {
		if _, err := os.Stat(filepath.Join(stage, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after uninstall", gone)
		}
	}
}

// TestSystemdNspawn boots a minimal Debian under systemd-nspawn, installs
// sealbox with the real sealboxd.service, and runs testdata/nspawn/run.sh
// inside: READY, sockets under /run, unseal and read, and what systemd gave
// the daemon, checked from inside it. The rootfs is built once by
// scripts/nspawn-rootfs.sh and cached ($SEALBOX_NSPAWN_ROOTFS). Where this
// machine cannot run it, testbin.Require says why: the test skips, and fails
// under CI, which must run it.
func TestSystemdNspawn(t *testing.T) {
	nspawn, rootfs := nspawnRootfs(t)
	t.Parallel()
	stage := t.TempDir()
	os.MkdirAll(filepath.Join(stage, "bin"), 0o755)
	for _, name := range []string{"sealboxd", "sealbox-admin", "sealbox"} {
		p, err := testbin.Build(name, false)
		if err != nil {
			t.Fatal(err)
		}
		copyFile(t, p, filepath.Join(stage, "bin", name), 0o755)
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	copyFile(t, filepath.Join(root, "sealboxd.service"), filepath.Join(stage, "sealboxd.service"), 0o644)
	copyFile(t, filepath.Join(root, "sealbox-askpass.service"), filepath.Join(stage, "sealbox-askpass.service"), 0o644)
	copyFile(t, filepath.Join(root, "config", "sealboxd.toml"), filepath.Join(stage, "sealboxd.toml"), 0o644)
	copyFile(t, filepath.Join("testdata", "nspawn", "run.sh"), filepath.Join(stage, "run.sh"), 0o755)
	for _, u := range []string{"sealbox-tang.socket", "sealbox-tang@.service", "sealbox-tpm2.socket", "sealbox-tpm2@.service"} {
		copyFile(t, filepath.Join(root, u), filepath.Join(stage, u), 0o644)
	}
	// A Tang server on the host: the container shares its network.
	tg := fleettest.StartTang(t)
	os.WriteFile(filepath.Join(stage, "tang.url"), []byte(tg.URL), 0o644)
	os.WriteFile(filepath.Join(stage, "tang.thp"), []byte(tg.Thumbprint()), 0o644)
	bootContainer(t, nspawn, rootfs, stage, "sealbox-test.service", "SEALBOX-NSPAWN:")
}

// nspawnRootfs returns systemd-nspawn and the container rootfs that
// scripts/nspawn-rootfs.sh builds, or stops the test (failing under CI).
func nspawnRootfs(t *testing.T) (nspawn, rootfs string) {
	t.Helper()
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		testbin.Require(t, "systemd-nspawn is not installed (apt-get install systemd-container)")
	}
	if os.Geteuid() != 0 {
		testbin.Require(t, "systemd-nspawn needs root")
	}
	rootfs = os.Getenv("SEALBOX_NSPAWN_ROOTFS")
	if rootfs == "" {
		rootfs = "/var/tmp/sealbox-nspawn-rootfs"
	}
	if _, err := os.Stat(filepath.Join(rootfs, "usr/lib/systemd/systemd")); err != nil {
		testbin.Require(t, fmt.Sprintf("no container rootfs at %s: build it with scripts/nspawn-rootfs.sh", rootfs))
	}
	return nspawn, rootfs
}

// bootContainer boots rootfs (on a throwaway overlay) with stage at
// /sealbox-test and runs testdata/nspawn/UNIT, whose script prints lines
// starting with marker and ends with "marker PASS".
func bootContainer(t *testing.T, nspawn, rootfs, stage, unit, marker string) {
	t.Helper()
	copyFile(t, filepath.Join("testdata", "nspawn", unit), filepath.Join(stage, unit), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nspawn, "-D", rootfs, "--volatile=overlay", "--register=no", "--keep-unit",
		"--console=read-only", "--capability=CAP_IPC_LOCK,CAP_NET_ADMIN",
		"--bind-ro="+stage+":/sealbox-test",
		"--bind-ro="+filepath.Join(stage, unit)+":/etc/systemd/system/"+unit,
		"--boot", "--", "systemd.unit="+unit)
	out, err := cmd.CombinedOutput()
	text := string(out)
	if !strings.Contains(text, marker) {
		// The container never ran the test: this machine cannot boot one.
		testbin.Require(t, fmt.Sprintf("systemd-nspawn could not boot a container here (%v):\n%s", err, lastLines(text, 15)))
	}
	if err != nil || !strings.Contains(text, marker+" PASS") {
		t.Fatalf("inside the container: %v\n%s", err, lastLines(text, 40))
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, marker) {
			t.Log(strings.TrimSpace(line))
		}
	}
}
