// Package daemon is sealboxd: it holds the keyring open for the host's whole
// life, starts sealed, and serves the master secret to registered clients on
// a service socket once an admin has unsealed it on the admin socket.
//
// Use New to open the keyring and bind both sockets, then Serve until the
// context ends; Reload applies the parts of a new configuration that can
// change live. AdminClient is the other end of the admin socket, for
// sealbox-admin.
//
// The state machine: sealed → unsealed (one admin's password) → sealed (seal
// request, Close, or a signal in sealboxd). No error path leaves it half
// unsealed: the secret is installed only after it decrypted into locked
// memory and the registry verified.
//
// Errors on the wire map to sentinels in one place (errorFor/api.APIError):
// api.ErrSealed (503), api.ErrNotAuthorized (403), unseal.ErrWrongPassword (401),
// api.ErrRefused (400/404/409), api.ErrIntegrity and api.ErrBusy.
package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/config"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// Socket modes. The service socket is open to every local process: who may
// read is decided per connection from kernel-attested credentials. The admin
// socket is the daemon user's alone.
const (
	ServiceSocketMode = 0o666
	AdminSocketMode   = 0o600
)

const (
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 10 * time.Second
	// maxServiceBody bounds a service request's body: the service API takes
	// none.
	maxServiceBody    = 1 << 10
	idleTimeout       = 60 * time.Second
	adminWriteTimeout = 3 * time.Minute // derivations may queue
	maxHeaderBytes    = 8 << 10
	kdfQueueLen       = 16
	kdfQueueWait      = 30 * time.Second
	// idleRelease: after a period with no request, hand freed memory back
	// to the kernel (each Argon2id derivation leaves tens or hundreds of
	// MiB behind, and sealboxd idles most of its life).
	idleRelease   = 5 * time.Second
	shutdownGrace = 5 * time.Second
	// heapLimit is the Go heap's soft limit: past it the collector works
	// harder.
	heapLimit = 128 << 20
)

// Daemon is a running sealboxd.
type Daemon struct {
	cfg    config.Config
	log    *slog.Logger
	level  *slog.LevelVar
	kr     *keyring.Keyring
	verHdr atomic.Pointer[versionValue] // the last X-Sealbox-Secret-Version value
	mgr    *admin.Manager
	vault  *vault
	audit  *auditor
	// noReadAudit skips read records; only the in-package benchmark sets
	// it, to measure what auditing costs. No configuration reaches it.
	noReadAudit bool
	budget      *unseal.Budget
	wm          *unseal.Watermark
	slotMax     keyring.Params // the largest admin slot's derivation
	maxWait     atomic.Int64   // time.Duration
	activity    atomic.Uint64  // requests served; the idle loop watches it
	started     time.Time
	notify      func(state string)
	stopping    chan struct{}
	// stopCtx is done once the daemon stops (close): work on behalf of a
	// request that may outlast it, such as a reseal, ends with it.
	stopCtx    context.Context
	stopCancel context.CancelFunc
	stopOnce   sync.Once

	svcLn, admLn   *peerListener
	svcSrv, admSrv *connServer
	credSrv        *credentialServer // nil when credential_socket is ""
	credWait       atomic.Int64      // time.Duration
	unattended     attempts
}

// Options are what New needs beyond the configuration.
type Options struct {
	Log    *slog.Logger
	Level  *slog.LevelVar     // adjusted by Reload; may be nil
	Notify func(state string) // sd_notify; may be nil
}

// New opens the keyring (holding its lock until Close) and binds both
// sockets with their final modes. It starts sealed.
func New(cfg config.Config, opts Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:      cfg,
		log:      opts.Log,
		level:    opts.Level,
		vault:    newVault(),
		started:  time.Now(),
		notify:   opts.Notify,
		stopping: make(chan struct{}),
	}
	d.stopCtx, d.stopCancel = context.WithCancel(context.Background())
	d.unattended.m, d.unattended.bound = map[string]*api.UnattendedAttempt{}, map[string][32]byte{}
	if d.notify == nil {
		d.notify = func(string) {}
	}
	d.maxWait.Store(int64(cfg.MaxWait))
	if err := checkOwnership(cfg.Keyring, d.log); err != nil {
		return nil, err
	}
	kr, err := keyring.Open(cfg.Keyring, keyring.Options{})
	if err != nil {
		return nil, err
	}
	d.kr = kr
	d.wm = &unseal.Watermark{}
	d.audit = newAuditor(kr, d.log, cfg.AuditMaxEvents, cfg.AuditMaxRecords, d.wm)
	d.audit.startPublishing()
	if path := journalSocket(cfg.AuditJournal); path != "" {
		j, err := openJournal(path, d.log)
		switch {
		case err == nil:
			d.audit.journal = j
			d.log.Info("audit: records are forwarded to the journal", "socket", path)
		case cfg.AuditJournal == "" || cfg.AuditJournal == "auto":
			d.log.Warn("audit: the journal's socket did not take a connection; records are not forwarded", "error", err)
		default:
			kr.Close()
			return nil, err
		}
	}
	probe := admin.New(kr, admin.Options{})
	if d.slotMax, err = probe.MaxSlotParams(); err != nil {
		kr.Close()
		return nil, err
	}
	budgetKiB, err := kdfBudget(cfg.KDFMemoryBudgetMiB, d.slotMax.MemoryKiB)
	if err != nil {
		kr.Close()
		return nil, err
	}
	d.budget = unseal.NewBudget(budgetKiB, kdfQueueLen, kdfQueueWait)
	// Argon2id's working memory is outside the Go heap (arenas); the heap
	// itself stays small, so the collector keeps it near that.
	debug.SetMemoryLimit(heapLimit)
	d.mgr = admin.New(kr, admin.Options{
		Memory:    memlock.Options{AllowUnlocked: cfg.AllowUnlockedMemory},
		Budget:    d.budget,
		LogKeys:   d.audit.keyBytes,
		Exclusive: d.audit.exclusive,
		Watermark: d.wm,
		OnCommit:  d.onCommit,
		Refusal:   func(ev audit.Event) { d.audit.Read(keyring.Events, ev) },
		Reseal:    d.resealHook,
		Remake: func(ctx context.Context, kind keyring.SlotKind, binding, kek []byte) ([]byte, error) {
			return unattended.Remake(ctx, d.unattendedEnv(), kind, binding, kek)
		},
	})
	// Until an unseal verifies them, the records on file are used only to
	// refuse: nothing is served while sealed.
	cs, err := d.mgr.RecordedClients()
	if err != nil {
		kr.Close()
		return nil, err
	}
	d.vault.replaceClients(0, cs)
	ln, err := listenUnix(cfg.Socket, ServiceSocketMode)
	if err != nil {
		kr.Close()
		return nil, err
	}
	d.svcLn = newPeerListener(ln, cfg.MaxConnections, func(c PeerCred) bool { _, ok := d.vault.match(c); return ok })
	d.svcLn.units = d.vault.hasUnitClients
	d.svcLn.noPidfd = func(err error) {
		d.log.Warn("clients registered by unit are refused on this kernel; uid clients still work", "err", err)
	}
	ln, err = listenUnix(cfg.AdminSocket, AdminSocketMode)
	if err != nil {
		d.svcLn.Close()
		kr.Close()
		return nil, err
	}
	d.admLn = newPeerListener(ln, cfg.MaxConnections, nil)
	d.credWait.Store(int64(cfg.CredentialWait))
	if path := cfg.CredentialSocketPath(); path != "" {
		// Mode 0600: systemd's helper connects as root; nobody else has
		// anything to ask there.
		cl, err := listenUnix(path, AdminSocketMode)
		if err != nil {
			d.svcLn.Close()
			d.admLn.Close()
			kr.Close()
			return nil, err
		}
		d.credSrv = d.newCredentialServer(cl)
	}
	logDebug := func(msg string, args ...any) { d.log.Debug(msg, args...) }
	d.svcSrv = &connServer{
		handler:        d.counted(d.serviceRouter()),
		log:            logDebug,
		headerTimeout:  readHeaderTimeout,
		idleTimeout:    idleTimeout,
		writeTimeout:   writeTimeout,
		maxHeaderBytes: maxHeaderBytes,
		maxBodyBytes:   maxServiceBody,
		// A peer that is not an Active client costs one answer: its
		// connection ends with the refusal.
		closeOnStatus: http.StatusForbidden,
		fastGET:       true,
	}
	d.admSrv = &connServer{
		handler:        d.counted(d.adminRouter()),
		log:            logDebug,
		headerTimeout:  readHeaderTimeout,
		idleTimeout:    idleTimeout,
		writeTimeout:   adminWriteTimeout,
		maxHeaderBytes: maxHeaderBytes,
		maxBodyBytes:   maxAdminBody,
		closeAfter:     true,
	}
	return d, nil
}

// counted notes each request for the idle loop.
func (d *Daemon) counted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.activity.Add(1)
		h.ServeHTTP(w, r)
	})
}

// checkOwnership refuses a keyring that belongs to another user or that
// others may write: whoever can replace it can make admins lock themselves
// out. A keyring that others may read gets a warning (a copy allows offline
// guessing, which Argon2id makes slow, but why offer it).
func checkOwnership(path string, log *slog.Logger) error {
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() {
		return nil // keyring.Open says what is wrong
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("keyring %s belongs to uid %d, but sealboxd runs as uid %d; chown it to the daemon's user", path, sys.Uid, os.Geteuid())
	}
	if mode := st.Mode().Perm(); mode&0o022 != 0 {
		return fmt.Errorf("keyring %s is mode %v: others may write it; chmod 600 it", path, mode)
	} else if mode&0o044 != 0 {
		log.Warn("keyring file is readable by others; it should be 0600", "keyring", path, "mode", mode.String())
	}
	return nil
}

// kdfBudget returns the budget in KiB: the configured one, which must hold
// one derivation of the largest slot (needKiB), or four such derivations,
// at most half of the memory, and never less than one.
func kdfBudget(cfgMiB uint32, needKiB uint32) (uint64, error) {
	if cfgMiB != 0 {
		b := uint64(cfgMiB) << 10
		if b < uint64(needKiB) {
			return 0, fmt.Errorf("kdf_memory_budget_mib = %d is smaller than one derivation of this keyring's largest slot (%d MiB); raise it", cfgMiB, needKiB>>10)
		}
		return b, nil
	}
	b := 4 * uint64(needKiB)
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		half := uint64(si.Totalram) * uint64(si.Unit) / 2 >> 10
		b = min(b, half)
	}
	return max(b, uint64(needKiB)), nil
}

// Serve answers on both sockets until ctx ends or a server fails, then seals,
// closes the sockets (removing their files) and the keyring.
func (d *Daemon) Serve(ctx context.Context) error {
	actx, stopAudit := context.WithCancel(context.Background())
	auditDone := make(chan struct{})
	go func() { d.audit.run(actx); close(auditDone) }()
	defer func() {
		stopAudit()
		<-auditDone
		d.audit.close()
		d.kr.Close()
		d.log.Info("stopped")
	}()
	go d.releaseWhenIdle(actx)
	errc := make(chan error, 3)
	epoch := d.vault.sealEpoch() // before any admin request can seal
	go func() { errc <- d.svcSrv.Serve(d.svcLn) }()
	go func() { errc <- d.admSrv.Serve(d.admLn) }()
	if d.credSrv != nil {
		go func() { errc <- d.credSrv.Serve() }()
	}
	policy, _ := d.mgr.Policy()
	d.log.Info("listening, sealed", "socket", d.cfg.Socket, "admin_socket", d.cfg.AdminSocket, "keyring", d.cfg.Keyring, "kdf_policy", policy.String(), "kdf_budget_mib", d.budget.CapKiB()>>10)
	d.notify("READY=1\nSTATUS=sealed")
	go d.keepArena()
	go d.runUnattended(actx, epoch)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		d.log.Error("server failed", "error", err)
	}
	d.close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// releaseWhenIdle returns freed memory to the kernel once per idle period:
// when a whole idleRelease passed without a request.
func (d *Daemon) releaseWhenIdle(ctx context.Context) {
	t := time.NewTicker(idleRelease)
	defer t.Stop()
	last, released := d.activity.Load(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := d.activity.Load()
		if now != last {
			last, released = now, false
			continue
		}
		if !released {
			debug.FreeOSMemory()
			released = true
		}
	}
}

// close seals and stops the servers; Serve then stops the audit writer and
// closes the keyring.
func (d *Daemon) close() {
	d.stopOnce.Do(func() {
		d.notify("STOPPING=1")
		close(d.stopping)
		d.stopCancel()
		d.Seal("shutdown", nil)
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		d.svcSrv.Shutdown(sctx)
		d.admSrv.Shutdown(sctx)
		d.svcLn.Close()
		d.admLn.Close()
		if d.credSrv != nil {
			d.credSrv.Close()
		}
	})
}

// keepArena keeps Argon2id working memory ready for the next unseal while
// the daemon is sealed, so that the admin waiting for it does not wait for
// the memory too (unseal.KeepArena). It is dropped at the unseal.
func (d *Daemon) keepArena() {
	if sealed, _ := d.vault.isSealed(); !sealed {
		return
	}
	if err := unseal.KeepArena(d.slotMax); err != nil {
		d.log.Warn("could not keep Argon2id memory ready for the next unseal; it will be mapped then", "error", err)
		return
	}
	if sealed, _ := d.vault.isSealed(); !sealed {
		unseal.DropArena() // an unseal won the race
	}
}

// onCommit follows a committed change: the client index is rebuilt from the
// records the change left (all verified), and a rekey's new log keys replace
// the old ones. Each change's generation and state root are logged, so that
// an operator can later tell an older copy of the file from the current one.
func (d *Daemon) onCommit(c *admin.Commit) {
	d.vault.replaceClients(c.Generation, c.Clients)
	if c.LogKeys != nil {
		d.audit.replaceKeys(c.LogKeys)
	}
	d.log.Info("keyring changed", "op", string(c.Op), "generation", c.Generation, "root", hex.EncodeToString(c.Root[:8]))
}

// Seal wipes the secret (for the admin socket, a signal, shutdown or a fatal
// error) and records who did it. Sealing never waits on the record: the
// secret goes first.
func (d *Daemon) Seal(by string, peer *audit.Peer) {
	// Before the vault: no unattended attempt may land after an admin's
	// seal (the seal epoch also refuses one already on its way).
	d.stopUnattended()
	if !d.vault.seal() {
		return
	}
	d.log.Info("sealed", "by", by)
	select {
	case <-d.stopping:
	default:
		go d.keepArena()
	}
	// Collect now: what runtime/secret marked for erasure (heap memory of
	// derivations and unwraps) is erased once the collector finds it
	// unreachable, and the pages go back to the kernel.
	go debug.FreeOSMemory()
	d.notify("STATUS=sealed")
	if err := d.audit.Sync(audit.Event{Kind: audit.KindSeal, Peer: peer, Outcome: audit.OK, Detail: by}); err != nil {
		d.log.Error("audit: the seal was not recorded", "error", err)
	}
}

// Reload applies what can change live: log_level and max_wait. Other keys
// need a restart; Reload says so in the log when they differ.
func (d *Daemon) Reload(cfg config.Config) {
	if d.level != nil {
		d.level.Set(cfg.Level())
	}
	d.maxWait.Store(int64(cfg.MaxWait))
	d.credWait.Store(int64(cfg.CredentialWait))
	if cfg.Keyring != d.cfg.Keyring || cfg.Socket != d.cfg.Socket || cfg.AdminSocket != d.cfg.AdminSocket ||
		cfg.MaxConnections != d.cfg.MaxConnections || cfg.AllowUnlockedMemory != d.cfg.AllowUnlockedMemory ||
		cfg.AuditMaxRecords != d.cfg.AuditMaxRecords || cfg.AuditMaxEvents != d.cfg.AuditMaxEvents {
		d.log.Warn("reload: paths, max_connections, allow_unlocked_memory and the audit caps take effect at the next restart")
	}
	d.log.Info("reloaded", "log_level", cfg.LogLevel, "max_wait", cfg.MaxWait.String(), "credential_wait", cfg.CredentialWait.String())
}

// Notify sends a state to systemd's notify socket ($NOTIFY_SOCKET), if any:
// a single datagram, as sd_notify(3) does.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
