package testdaemon

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets this test binary play a daemon: SBX_FAKE=ready sends
// READY=1 and exits 3 on SIGTERM; early exits at once; silent never says
// it is ready.
func TestMain(m *testing.M) {
	switch os.Getenv("SBX_FAKE") {
	case "ready":
		fmt.Println("fake: starting")
		c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
		if err != nil {
			os.Exit(10)
		}
		c.Write([]byte("STATUS=up\nREADY=1"))
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		os.Exit(3)
	case "early":
		fmt.Println("fake: cannot open the keyring")
		os.Exit(1)
	case "silent":
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fake(t *testing.T, mode string, timeout time.Duration) (*Process, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Start(Options{Bin: self, Env: []string{"SBX_FAKE=" + mode}, Timeout: timeout})
}

func TestStartWaitsForReadyAndStopReportsTheCode(t *testing.T) {
	t.Parallel()
	p, err := fake(t, "ready", 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Ready <= 0 || p.PID != p.Cmd.Process.Pid {
		t.Fatalf("ready %v, pid %d", p.Ready, p.PID)
	}
	code, err := p.Stop(syscall.SIGTERM, 10*time.Second)
	if err != nil || code != 3 {
		t.Fatalf("stop: %d %v", code, err)
	}
	if !strings.Contains(p.Log.String(), "fake: starting") {
		t.Fatalf("log %q", p.Log.String())
	}
	p.Kill() // after an exit: returns at once
}

func TestStartReportsAnEarlyExitWithItsLog(t *testing.T) {
	t.Parallel()
	_, err := fake(t, "early", 0)
	if err == nil || !strings.Contains(err.Error(), "exited at start") || !strings.Contains(err.Error(), "cannot open the keyring") {
		t.Fatalf("got %v", err)
	}
}

func TestStartGivesUpOnADaemonThatNeverGetsReady(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := fake(t, "silent", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not get ready") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}
