package daemon

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/peer"
	"github.com/sealbox/sealbox/keyring"
)

// The credential socket serves systemd's LoadCredential=: a unit with
//
//	LoadCredential=NAME:/run/sealbox/credentials.sock
//
// gets the master secret in $CREDENTIALS_DIRECTORY/NAME, with no sealbox
// code in the service. systemd (its helper sd-mkdcreds, uid 0, already in
// the unit's cgroup) connects from the abstract address
// "\0RANDOM/unit/UNIT/NAME", sends nothing, and reads until EOF: whatever
// arrived is the credential. The request is authorized by the unit the
// address names and the unit the peer's cgroup proves (through a pidfd,
// internal/peer) agreeing, and that unit being an Active client.
//
// The protocol has no error channel: EOF with nothing would make an empty
// credential, and the unit would start. So a refused, failed or timed-out
// request gets more than systemd accepts (1 MiB): systemd 252 then fails
// the unit with 243/CREDENTIALS, and the reason is in sealboxd's log and
// the audit log. While sealed, the request waits for an unseal, at most
// credential_wait.

const (
	// credentialTooBig is one byte more than systemd 252 reads of a
	// credential: sent instead of the secret, it fails the unit.
	credentialTooBig = 1<<20 + 1
	// maxCredentialConns bounds requests in progress (systemd sends them
	// one by one per unit, and the socket is root's and the daemon's).
	maxCredentialConns = 64
)

// credentialServer accepts LoadCredential= connections.
type credentialServer struct {
	d    *Daemon
	ln   *net.UnixListener
	wg   sync.WaitGroup
	sema chan struct{}
}

func (d *Daemon) newCredentialServer(ln *net.UnixListener) *credentialServer {
	return &credentialServer{d: d, ln: ln, sema: make(chan struct{}, maxCredentialConns)}
}

// Serve answers until the listener is closed.
func (cs *credentialServer) Serve() error {
	for {
		c, err := cs.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return errServerClosed
			}
			return err
		}
		select {
		case cs.sema <- struct{}{}:
		default:
			cs.refuse(c, nil, "", "too many credential requests at once")
			continue
		}
		cs.wg.Add(1)
		go func() {
			defer func() { <-cs.sema; cs.wg.Done() }()
			cs.handle(c)
		}()
	}
}

// Close stops accepting and waits for requests in progress (a waiting
// request ends when the daemon stops).
func (cs *credentialServer) Close() {
	cs.ln.Close()
	cs.wg.Wait()
}

func (cs *credentialServer) handle(c *net.UnixConn) {
	d := cs.d
	req, id, err := peer.LoadCredential(c)
	p := &audit.Peer{UID: id.UID, GID: id.GID, PID: id.PID, Unit: id.Unit}
	ev := audit.Event{Kind: audit.KindCredential, Peer: p, Detail: "credential " + req.ID}
	if err != nil {
		cs.refuse(c, &ev, "", err.Error())
		return
	}
	ev.Detail = "credential " + req.ID + " for " + req.Unit
	client, ok := d.vault.matchCredential(req.Unit)
	if client != nil {
		ev.Client = client.Name
	}
	if !ok {
		cs.refuse(c, &ev, req.Unit, "the unit is not an Active client (sealbox-admin client add NAME --unit "+req.Unit+")")
		return
	}
	wait := time.Duration(d.credWait.Load())
	if sealed, ch := d.vault.isSealed(); sealed {
		d.log.Info("credential request waits for an unseal", "unit", req.Unit, "credential", req.ID, "for", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ch:
		case <-t.C:
		case <-d.stopping:
		}
		t.Stop()
	}
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	outcome, _, werr := d.vault.serveCredential(req.Unit, func(secret []byte) error {
		_, err := c.Write(secret) // from locked memory to the socket
		return err
	})
	switch {
	case outcome == audit.Served && werr == nil:
		ev.Outcome = outcome
		d.audit.Read(keyring.Reads, ev)
		d.log.Info("credential served", "unit", req.Unit, "credential", req.ID, "client", ev.Client)
		c.Close()
	case outcome == audit.SealedOutcome:
		ev.Outcome = audit.TimedOut
		cs.refuse(c, &ev, req.Unit, "still sealed after credential_wait ("+wait.String()+"); unseal, then start the unit again")
	case werr != nil:
		ev.Outcome = audit.WriteFailed
		d.audit.Read(keyring.Reads, ev)
		c.Close()
	default:
		cs.refuse(c, &ev, req.Unit, "the unit's client was disabled while it waited")
	}
}

// refuse makes systemd fail the unit: more than a credential may hold,
// then EOF. It never sends an empty credential.
func (cs *credentialServer) refuse(c *net.UnixConn, ev *audit.Event, unit, why string) {
	d := cs.d
	d.log.Warn("credential refused; the unit fails with 243/CREDENTIALS", "unit", unit, "reason", why)
	if ev != nil {
		if ev.Outcome == "" {
			ev.Outcome = audit.Refused
		}
		if ev.Outcome != audit.Refused {
			ev.Detail += ": " + why
		}
		d.audit.Read(keyring.Reads, *ev)
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	junk := make([]byte, 64<<10)
	for sent := 0; sent < credentialTooBig; {
		n, err := c.Write(junk[:min(len(junk), credentialTooBig-sent)])
		if err != nil {
			break
		}
		sent += n
	}
	c.Close()
}
