package daemon

import (
	"io"
	"sort"
	"sync"
	"time"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal"
)

// vault is the daemon's state: the master secret while unsealed, and the
// client index that authorizes reads. All of it sits behind one RWMutex:
// readers hold the read lock only while they copy the secret out to the
// connection, so seal (write lock) never unmaps memory a reader is using, and
// waits at most for in-flight writes.
type vault struct {
	mu         sync.RWMutex
	secret     *memlock.Buffer // nil while sealed
	version    uint64
	unsealedBy string
	unsealedAt time.Time
	report     *unseal.Report
	// clients indexes client records by uid. While sealed it holds the
	// records as read from the file, used only to refuse; on unseal and after
	// every change it holds only records that verified.
	clients map[uint32][]*keyring.Client
	total   int
	active  int
	// unsealed is closed when the vault is unsealed, and replaced on seal;
	// long-polling readers wait on it.
	unsealed chan struct{}
}

func newVault() *vault {
	return &vault{clients: map[uint32][]*keyring.Client{}, unsealed: make(chan struct{})}
}

// setClients replaces the client index. The caller holds mu for writing.
func (v *vault) setClients(cs []*keyring.Client) {
	idx := make(map[uint32][]*keyring.Client, len(cs))
	active := 0
	for _, c := range cs {
		idx[c.UID] = append(idx[c.UID], c)
		if c.Status == keyring.ClientActive {
			active++
		}
	}
	for _, list := range idx {
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	}
	v.clients, v.total, v.active = idx, len(cs), active
}

// replaceClients swaps in a new client index (after a change).
func (v *vault) replaceClients(cs []*keyring.Client, rep *unseal.Report) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.setClients(cs)
	if rep != nil {
		v.report = rep
	}
}

// upsertClient puts one changed client record into the index.
func (v *vault) upsertClient(c *keyring.Client) {
	v.mu.Lock()
	defer v.mu.Unlock()
	all := make([]*keyring.Client, 0, v.total+1)
	for _, list := range v.clients {
		for _, old := range list {
			if old.Name != c.Name {
				all = append(all, old)
			}
		}
	}
	v.setClients(append(all, c))
}

// match returns the client a peer is, and whether it may read: an Active
// record whose uid matches and whose gid, if set, matches too. With no Active
// match it returns a matching record of another status (for the audit line),
// or nil.
func (v *vault) match(cred PeerCred) (c *keyring.Client, ok bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.matchLocked(cred)
}

func (v *vault) matchLocked(cred PeerCred) (*keyring.Client, bool) {
	var other *keyring.Client
	for _, c := range v.clients[cred.UID] {
		if c.HasGID && c.GID != cred.GID {
			continue
		}
		if c.Status == keyring.ClientActive {
			return c, true
		}
		if other == nil {
			other = c
		}
	}
	return other, false
}

// unseal installs the result of a successful admin unseal. If the vault was
// already unsealed (a race between two admins) the newer secret wins and the
// older buffer is destroyed.
func (v *vault) unseal(u *admin.Unsealed, by string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.secret
	v.secret, v.version, v.report = u.Secret, u.Version, u.Report
	v.unsealedBy, v.unsealedAt = by, time.Now()
	v.setClients(u.Clients)
	if old == nil {
		close(v.unsealed)
	} else {
		old.Destroy()
	}
}

// rotate swaps in a new master secret if unsealed; otherwise it destroys it
// (the next unseal reads the new one from the keyring).
func (v *vault) rotate(secret *memlock.Buffer, version uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.secret == nil {
		secret.Destroy()
		return
	}
	v.secret.Destroy()
	v.secret, v.version = secret, version
}

// seal wipes and unmaps the secret. It reports whether it was unsealed.
func (v *vault) seal() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.secret == nil {
		return false
	}
	v.secret.Destroy()
	v.secret, v.version, v.unsealedBy = nil, 0, ""
	v.unsealed = make(chan struct{})
	return true
}

// isSealed reports the state and, when sealed, a channel closed on unseal.
func (v *vault) isSealed() (bool, <-chan struct{}) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.secret == nil, v.unsealed
}

// serve re-checks the peer's authorization under the read lock (a client
// disabled a moment ago is refused) and writes the secret to w straight from
// the locked buffer. It returns the outcome and the client matched.
func (v *vault) serve(cred PeerCred, w io.Writer, before func(n int, version uint64)) (outcome string, c *keyring.Client, err error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c, ok := v.matchLocked(cred)
	if !ok {
		return "refused", c, nil
	}
	if v.secret == nil {
		return "sealed", c, nil
	}
	b := v.secret.Bytes()
	before(len(b), v.version)
	_, err = w.Write(b)
	return "served", c, err
}

// status fills the parts of s that the vault knows.
func (v *vault) status(s *Status) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s.Sealed = v.secret == nil
	if !s.Sealed {
		s.MemoryLocked = v.secret.Locked()
		s.UnsealedBy = v.unsealedBy
		t := v.unsealedAt.UTC()
		s.UnsealedAt = &t
		s.SecretVersion = v.version
	}
	s.Clients, s.ActiveClients = v.total, v.active
	if v.report != nil {
		if err := v.report.Err(); err != nil {
			s.RegistryProblems = err.Error()
		}
	}
}
