package main

// A local user who is neither a client nor an admin, attacking the daemon
// the way issue 13 found: by connections, by refused reads, by guesses.
// The flooder is this test binary, copied where another uid can run it and
// re-run as uid `stranger` (TestMain sends it to flood).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/internal/testbin"
)

// flood is the stranger's side: SEALBOX_TEST_FLOOD_CONNS connections that
// each send refused requests as fast as the daemon answers, reconnecting
// when closed, for SEALBOX_TEST_FLOOD_FOR; it prints how many answers it
// got.
func flood(sock string) int {
	conns, _ := strconv.Atoi(os.Getenv("SEALBOX_TEST_FLOOD_CONNS"))
	d, _ := time.ParseDuration(os.Getenv("SEALBOX_TEST_FLOOD_FOR"))
	idle := os.Getenv("SEALBOX_TEST_FLOOD_IDLE") != ""
	var answers atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				c, err := net.Dial("unix", sock)
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				br := bufio.NewReader(c)
				for time.Now().Before(stop) {
					if _, err := io.WriteString(c, "GET /v1/secret HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
						break
					}
					line, err := br.ReadString('\n')
					if err != nil {
						break
					}
					if strings.Contains(line, " 403 ") {
						answers.Add(1)
					}
					if idle {
						// Hold the connection, as a slow peer would.
						c.SetReadDeadline(stop)
						io.Copy(io.Discard, br)
						break
					}
					for {
						l, err := br.ReadString('\n')
						if err != nil || l == "\r\n" {
							break
						}
					}
					io.CopyN(io.Discard, br, 64) // the JSON refusal body, then the connection closes
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	fmt.Println(answers.Load())
	return 0
}

// startFlood runs the flooder as uid stranger.
func startFlood(t *testing.T, e *env, conns int, d time.Duration, idle bool) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := e.dir + "/flooder"
	copyFile(t, self, bin, 0o755)
	cmd := exec.Command("setpriv", "--reuid", strconv.Itoa(stranger), "--regid", strconv.Itoa(stranger), "--clear-groups", bin)
	cmd.Env = append(os.Environ(), "SEALBOX_TEST_FLOOD="+e.sock, "SEALBOX_TEST_FLOOD_CONNS="+strconv.Itoa(conns), "SEALBOX_TEST_FLOOD_FOR="+d.String())
	if idle {
		cmd.Env = append(cmd.Env, "SEALBOX_TEST_FLOOD_IDLE=1")
	}
	cmd.Stderr = os.Stderr
	return cmd
}

func registerRoot(e *env) {
	e.admin(0, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "root-reader", "--uid", "0", "--as", "alice")
}

// TestStrangerCannotStarveClients: 256 connections from a uid that is no
// client, each refused and then held, while a registered client reads.
func TestStrangerCannotStarveClients(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	registerRoot(e)
	e.start(nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	fl := startFlood(t, e, 256, 8*time.Second, true)
	if err := fl.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the flood take what it can
	hc := unixClient(e.sock)
	hc.Timeout = 2500 * time.Millisecond
	ok, total := 0, 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); total++ {
		resp, err := hc.Get("http://sealbox/v1/secret")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				ok++
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	fl.Wait()
	t.Logf("under a 256-connection flood: %d of %d reads served", ok, total)
	if total < 20 || float64(ok) < 0.95*float64(total) {
		t.Fatalf("only %d of %d reads by a registered client were served under the flood", ok, total)
	}
}

// TestRefusalFloodCannotEraseOrBloat: refused reads at full speed for 10 s
// neither push an admin record out nor grow the keyring by 16 MiB.
func TestRefusalFloodCannotEraseOrBloat(t *testing.T) {
	requireRootTools(t)
	t.Parallel()
	e := newEnv(t)
	e.start(nil, "--config", writeFile(t, e.dir, "small.toml", "audit_max_records = 1000\n"))
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	e.online(0, pwAlice+"\n", "client", "disable", "svc", "--as", "alice")
	e.online(0, pwAlice+"\n", "client", "enable", "svc", "--as", "alice")
	before := e.online(0, "", "audit", "--json").out
	st, _ := os.Stat(e.keyring)
	fl := startFlood(t, e, 8, 10*time.Second, false)
	out, err := fl.Output()
	if err != nil {
		t.Fatal(err)
	}
	answers, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	after := e.online(0, "", "audit", "--json").out
	var pre, post []struct{ Seq uint64 }
	json.Unmarshal([]byte(before), &pre)
	json.Unmarshal([]byte(after), &post)
	if len(pre) == 0 || len(post) < len(pre) || post[0].Seq != pre[0].Seq {
		t.Fatalf("the events log lost records under the flood: %d before (from %d), %d after", len(pre), pre[0].Seq, len(post))
	}
	e.online(0, "", "audit", "verify")
	reads := e.online(0, "", "audit", "--reads", "--json").out
	var recs []struct{ Event struct{ Count int64 } }
	json.Unmarshal([]byte(reads), &recs)
	var counted int64
	for _, r := range recs {
		counted += max(r.Event.Count, 1)
	}
	st2, _ := os.Stat(e.keyring)
	grew := st2.Size() - st.Size()
	t.Logf("10 s of refused reads: %d refusals answered, %d read records holding %d of them, keyring grew by %d KiB", answers, len(recs), counted, grew>>10)
	if answers < 1000 {
		t.Fatalf("the flood got only %d answers: no flood", answers)
	}
	if grew > 16<<20 {
		t.Fatalf("the keyring grew by %d MiB", grew>>20)
	}
	if counted < int64(answers)/2 {
		t.Fatalf("the refusals are not accounted for: %d counted of %d", counted, answers)
	}
}

// TestParallelGuessesCannotOutrunTheBackoff: twenty guesses at once for one
// name cost at most the free attempts' derivations.
func TestParallelGuessesCannotOutrunTheBackoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(nil)
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	st0, err := ac.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := api.NewClient(e.admSock)
			defer c.Close()
			c.Unseal(context.Background(), "alice", []byte(fmt.Sprintf("wrong guess number %d", i)))
		}()
	}
	wg.Wait()
	st, _ := ac.Status(context.Background())
	if n := st.KDFDerivations - st0.KDFDerivations; n > 3 {
		t.Fatalf("20 parallel guesses ran %d derivations; the backoff allows 3", n)
	}
	// Every attempt is in the audit log, the refused ones too (those
	// aggregated, with a count).
	out := e.online(0, "", "audit", "--json", "--admin", "alice").out
	var recs []struct {
		Event struct {
			Outcome string
			Count   int64
		}
	}
	json.Unmarshal([]byte(out), &recs)
	n := int64(0)
	for _, r := range recs {
		if r.Event.Outcome == "backoff" || r.Event.Outcome == "wrong_password" {
			n += max(r.Event.Count, 1)
		}
	}
	if n != 20 {
		t.Fatalf("%d of 20 attempts recorded:\n%s", n, out)
	}
}

// TestAmbiguousClientRefused: a second registration matching exactly the
// peers of another is refused, naming it; unseal attempts on an unsealed
// daemon and offline password checks are recorded as what they are.
func TestAmbiguousClientAndAttemptsRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.admin(4, pwAlice+"\n", "--keyring", e.keyring, "client", "add", "svc2", "--uid", strconv.Itoa(nobody), "--as", "alice")
	if !strings.Contains(r.out, `client "svc"`) {
		t.Fatalf("ambiguous registration: %s", r.out)
	}
	e.admin(0, pwBob+"\n", "--keyring", e.keyring, "check", "--as", "bob")
	e.start(nil)
	e.online(0, pwAlice+"\n", "unseal", "--admin", "alice")
	ac := api.NewClient(e.admSock)
	defer ac.Close()
	if st, err := ac.Unseal(context.Background(), "bob", []byte("anything at all")); err != nil || !st.AlreadyUnsealed {
		t.Fatalf("unseal of an unsealed daemon: %v", err)
	}
	out := e.online(0, "", "audit", "--json").out
	for _, want := range []string{`"kind": "check",`, `"kind": "unseal",` + "\n" + `      "actor": "bob",`} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s record:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"actor": "bob",`+"\n"+`      "outcome": "ok"`) {
		t.Errorf("an offline check was recorded as an unseal:\n%s", out)
	}
	_ = testbin.InCI
}
