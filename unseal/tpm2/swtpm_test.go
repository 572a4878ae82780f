package tpm2

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/internal/testbin"
)

// tools are the programs the TPM tests run.
var tools = []string{"swtpm", "tpm2_createprimary", "tpm2_create", "tpm2_load",
	"tpm2_unseal", "tpm2_pcrread", "tpm2_pcrextend", "tpm2_flushcontext", "tpm2_createpolicy"}

func requireTools(t testing.TB) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testbin.Require(t, tool+" is not installed (apt-get install swtpm swtpm-tools tpm2-tools)")
		}
	}
}

// swtpm is a software TPM 2.0 on 127.0.0.1 (internal/fleettest), seen as
// this package's Config.
type swtpm struct{ *fleettest.SWTPM }

// startSWTPM starts a swtpm on a fresh state directory; t.Cleanup kills it.
func startSWTPM(t testing.TB) *swtpm {
	t.Helper()
	requireTools(t)
	return &swtpm{fleettest.StartSWTPM(t)}
}

func (s *swtpm) cfg() Config { return Config{TCTI: s.TCTI()} }

// restart is a reboot: the same TPM (state directory), PCRs reset.
func (s *swtpm) restart() { s.Reboot() }

func (s *swtpm) stop() { s.Stop() }

// tool runs a tpm2-tools command against s, for test setup.
func (s *swtpm) tool(name string, args ...string) []byte { return s.Tool(name, args...) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
