package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// The tang section: recovering a key bound to a real tangd (Debian's, under
// socat on 127.0.0.1), sealbox against clevis, like with like: a process
// per recovery on both sides (sealbox-admin unattended-helper, as the
// socket-activated sealbox-tang@ runs it, against clevis decrypt), then the
// same against a server that accepts and never answers.

const (
	tangdBin    = "/usr/libexec/tangd"
	tangdKeygen = "/usr/libexec/tangd-keygen"
)

// noProxy is the environment for clevis (its curl honours proxies).
func noProxy() []string {
	return append(os.Environ(), "http_proxy=", "HTTP_PROXY=", "https_proxy=", "HTTPS_PROXY=", "all_proxy=", "ALL_PROXY=")
}

func (b *bench) tangSection() error {
	for _, p := range []string{tangdBin, tangdKeygen} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("tang section: %s is missing (apt-get install tang clevis socat)", p)
		}
	}
	for _, tool := range []string{"socat", "clevis"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("tang section: %s is missing (apt-get install tang clevis socat)", tool)
		}
	}
	helper := b.adminBin
	if helper == "" {
		helper = filepath.Join(filepath.Dir(b.daemonBin), "sealbox-admin")
	}
	if _, err := os.Stat(helper); err != nil {
		return fmt.Errorf("tang section: %v (make build puts sealbox-admin beside sealboxd)", err)
	}
	fmt.Fprintln(os.Stderr, "tang: a key bound to a real tangd, recovered by sealbox and by clevis")
	keys := filepath.Join(b.dir, "tang")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command(tangdKeygen, keys).CombinedOutput(); err != nil {
		return fmt.Errorf("tangd-keygen: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	srv := exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port), fmt.Sprintf("EXEC:%s %s", tangdBin, keys))
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { syscall.Kill(-srv.Process.Pid, syscall.SIGKILL); srv.Wait() }()
	var adv *tang.Adv
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		adv, err = tang.Fetch(ctx, tang.Client(time.Second), url)
		cancel()
		if err == nil {
			break
		}
		if i == 100 {
			return fmt.Errorf("tangd does not answer on %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	kek := make([]byte, unattended.KeySize)
	rand.Read(kek)
	jwe, err := tang.Encrypt(adv, kek)
	if err != nil {
		return err
	}
	n := 30
	if b.quick {
		n = 8
	}
	ours := func(binding []byte, timeout time.Duration) (time.Duration, error) {
		req, _ := json.Marshal(&unattended.HelperRequest{Op: "open", Kind: "tang", Binding: binding, TimeoutMS: timeout.Milliseconds(), DialTimeoutMS: 1000})
		cmd := exec.Command(helper, "unattended-helper", "--kind", "tang")
		cmd.Stdin = bytes.NewReader(append(req, '\n'))
		start := time.Now()
		out, err := cmd.Output()
		d := time.Since(start)
		var resp unattended.HelperResponse
		if err == nil {
			err = json.Unmarshal(out, &resp)
		}
		if err == nil && resp.Code != "" {
			err = errors.New(resp.Error)
		}
		if err == nil && !bytes.Equal(resp.Key, kek) {
			err = errors.New("the helper recovered a wrong key")
		}
		return d, err
	}
	theirs := func(binding []byte, limit time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		cmd := exec.CommandContext(ctx, "clevis", "decrypt")
		// clevis is a shell script whose curl holds stdout: kill the group.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		cmd.Env = noProxy()
		cmd.Stdin = bytes.NewReader(binding)
		start := time.Now()
		out, err := cmd.Output()
		d := time.Since(start)
		if ctx.Err() != nil {
			return d, ctx.Err()
		}
		if err == nil && !bytes.Equal(out, kek) {
			err = errors.New("clevis decrypt gave a wrong key")
		}
		return d, err
	}
	var mine, base []time.Duration
	for range n {
		d, err := ours(jwe, 10*time.Second)
		if err != nil {
			return fmt.Errorf("sealbox-admin unattended-helper: %w", err)
		}
		mine = append(mine, d)
		d, err = theirs(jwe, 30*time.Second)
		if err != nil {
			return fmt.Errorf("clevis decrypt: %w", err)
		}
		base = append(base, d)
	}
	m, c := medianD(mine), medianD(base)
	b.add(row{Section: "tang", Metric: fmt.Sprintf("recover a Tang-bound key, a process each (median of %d): sealbox-tang@'s helper vs clevis decrypt", n),
		Sealbox: ms(m), Baseline: ms(c), Ratio: float64(m) / float64(c), Goal: "<= 1.0", Met: met(m <= c)})
	// In process, as sealboxd does without helpers: no process start.
	var inproc []time.Duration
	for range n {
		dst := make([]byte, unattended.KeySize)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err := tang.Recover(ctx, tang.Client(time.Second), jwe, dst)
		inproc = append(inproc, time.Since(start))
		cancel()
		if err != nil {
			return fmt.Errorf("tang.Recover: %w", err)
		}
	}
	b.add(row{Section: "tang", Metric: "recover a Tang-bound key in sealboxd's own process (no helper; median)", Sealbox: ms(medianD(inproc))})

	// A server that accepts and never answers, bound like the first.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer hung.Close()
	go func() {
		var held []net.Conn
		for {
			c, err := hung.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	hungURL := "http://" + hung.Addr().String()
	hungAdv, err := tang.ParseAdv(hungURL, adv.JWS())
	if err != nil {
		return err
	}
	hungJWE, err := tang.Encrypt(hungAdv, kek)
	if err != nil {
		return err
	}
	deadline, limit := 2*time.Second, 10*time.Second
	if b.quick {
		deadline, limit = time.Second, 3*time.Second
	}
	d, err := ours(hungJWE, deadline)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		return fmt.Errorf("the helper against a hung server: %v", err)
	}
	cd, cerr := theirs(hungJWE, limit)
	baseline := ms(cd)
	if errors.Is(cerr, context.DeadlineExceeded) {
		baseline = fmt.Sprintf("no answer: killed at %s", ms(limit))
	}
	b.add(row{Section: "tang", Metric: fmt.Sprintf("give up on a server that accepts and never answers (deadline %v) vs clevis decrypt", deadline),
		Sealbox: ms(d), Baseline: baseline, Goal: "at the deadline", Met: met(d < deadline+time.Second)})
	return nil
}
