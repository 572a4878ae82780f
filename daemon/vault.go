package daemon

import (
	"errors"
	"sync"
	"time"

	"github.com/sealbox/sealbox/admin/api"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/audit"
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
	// epoch counts seal requests: an unseal that started before one is
	// not installed (a seal wins over an unseal in progress).
	epoch uint64
	// byUID indexes the clients that name a uid; byUnit those that name
	// only a unit. While sealed they hold the records as read from the
	// file, used only to refuse; on unseal and after every change they hold
	// only records that verified.
	byUID  map[uint32][]*keyring.Client
	byUnit map[string][]*keyring.Client
	// unitUIDs holds the uids that some client by unit is bound to, and
	// unitAnyUID whether a client by unit takes any uid: a peer whose unit
	// is unknown is refused where one of those could have been it.
	unitUIDs   map[uint32]bool
	unitAnyUID bool
	total      int
	active     int
	// clientsGen is the state root generation of the change that last
	// replaced the clients (0: read at start, not verified), and
	// latestVersion the newest master secret version rotated in, sealed or
	// not: an unseal that read the file before either is stale in that.
	clientsGen    uint64
	latestVersion uint64
	// unsealed is closed when the vault is unsealed, and replaced on seal;
	// long-polling readers wait on it.
	unsealed chan struct{}
}

func newVault() *vault {
	return &vault{byUID: map[uint32][]*keyring.Client{}, byUnit: map[string][]*keyring.Client{}, unsealed: make(chan struct{})}
}

// setClients replaces the client index. The caller holds mu for writing.
func (v *vault) setClients(cs []*keyring.Client) {
	byUID := make(map[uint32][]*keyring.Client, len(cs))
	byUnit := map[string][]*keyring.Client{}
	unitUIDs, unitAnyUID := map[uint32]bool{}, false
	active := 0
	for _, c := range cs {
		if c.Status == keyring.ClientRetired {
			continue // a retired client matches no one
		}
		if c.Unit != "" {
			if c.HasUID {
				unitUIDs[c.UID] = true
			} else {
				unitAnyUID = true
			}
		}
		if c.HasUID {
			byUID[c.UID] = append(byUID[c.UID], c)
		} else {
			byUnit[c.Unit] = append(byUnit[c.Unit], c)
		}
		if c.Status == keyring.ClientActive {
			active++
		}
	}
	v.byUID, v.byUnit, v.total, v.active = byUID, byUnit, len(cs), active
	v.unitUIDs, v.unitAnyUID = unitUIDs, unitAnyUID
}

// replaceClients swaps in a new client index, as of the change that made
// state root generation gen (0 for the records read at start).
func (v *vault) replaceClients(gen uint64, cs []*keyring.Client) {
	v.mu.Lock()
	defer v.mu.Unlock()
	// Changes report their commits outside the writer's lock, so two can
	// arrive out of order: the older one's clients are not the file's.
	if gen != 0 && gen < v.clientsGen {
		return
	}
	v.setClients(cs)
	v.clientsGen = max(v.clientsGen, gen)
}

// hasUnitClients reports whether some client that is not retired is
// registered by unit.
func (v *vault) hasUnitClients() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.unitAnyUID || len(v.unitUIDs) > 0
}

// match returns the client a peer is, and whether it may read: of the
// clients whose uid, gid and unit constraints the peer meets, the most
// specific one (admin.Specificity), which must be Active. A less specific
// client never stands in for a disabled one. With no match it returns nil.
func (v *vault) match(cred PeerCred) (c *keyring.Client, ok bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.matchLocked(cred)
}

func (v *vault) matchLocked(cred PeerCred) (*keyring.Client, bool) {
	if !cred.UnitKnown && (v.unitAnyUID || v.unitUIDs[cred.UID]) {
		// Which unit the peer runs in decides here, and it is not known:
		// a broader client must not stand in for one by unit.
		return nil, false
	}
	var best *keyring.Client
	consider := func(list []*keyring.Client) {
		for _, c := range list {
			if c.HasGID && c.GID != cred.GID || c.Unit != "" && c.Unit != cred.Unit {
				continue
			}
			if best == nil || admin.Specificity(c) > admin.Specificity(best) {
				best = c
			}
		}
	}
	consider(v.byUID[cred.UID])
	if cred.Unit != "" {
		consider(v.byUnit[cred.Unit])
	}
	return best, best != nil && best.Status == keyring.ClientActive
}

// matchCredential returns the client a LoadCredential= request for unit is
// (systemd's helper asks as root, in the unit's cgroup): a client of that
// unit that takes any uid, or uid 0. It must be Active.
func (v *vault) matchCredential(unit string) (*keyring.Client, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c, ok := v.matchLocked(PeerCred{UID: 0, GID: 0, Unit: unit, UnitKnown: true})
	if c != nil && c.Unit == "" {
		return nil, false // a client by uid 0 alone is not a unit's
	}
	return c, ok
}

// serveCredential is serve for a credential request: the secret, if unit's
// client is still Active and the vault unsealed.
func (v *vault) serveCredential(unit string, write func(secret []byte) error) (audit.Outcome, *keyring.Client, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c, ok := v.matchLocked(PeerCred{UID: 0, GID: 0, Unit: unit, UnitKnown: true})
	if !ok || c.Unit == "" {
		return audit.Refused, c, nil
	}
	if v.secret == nil {
		return audit.SealedOutcome, c, nil
	}
	return audit.Served, c, write(v.secret.Bytes())
}

// sealEpoch returns the current seal epoch, for unseal to check against.
func (v *vault) sealEpoch() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.epoch
}

// unseal installs the result of a successful admin unseal, unless a seal
// was requested since epoch: then it reports false and the caller destroys
// u. If the vault was already unsealed (a race between two admins) the
// newer secret wins and the older buffer is destroyed.
func (v *vault) unseal(u *admin.Unsealed, by string, epoch uint64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.epoch != epoch {
		return errSealedMeanwhile
	}
	if u.Version < v.latestVersion {
		return errRotatedMeanwhile
	}
	old := v.secret
	v.secret, v.version, v.report = u.Secret, u.Version, u.Report
	v.latestVersion = max(v.latestVersion, u.Version)
	v.unsealedBy, v.unsealedAt = by, time.Now()
	// A change committed since the unseal read the file (a client
	// disabled meanwhile, say) already put the newer clients here.
	if v.clientsGen <= u.Generation {
		v.setClients(u.Clients)
	}
	if old == nil {
		close(v.unsealed)
	} else {
		old.Destroy()
	}
	return nil
}

// Why an unseal was not installed.
var (
	errSealedMeanwhile  = errors.New("sealed while the unseal was in progress")
	errRotatedMeanwhile = errors.New("the master secret was rotated while the unseal was in progress")
)

// rotate swaps in a new master secret if unsealed; otherwise it destroys it
// (the next unseal reads the new one from the keyring).
func (v *vault) rotate(secret *memlock.Buffer, version uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.secret == nil || version < v.latestVersion || version <= v.version {
		// Sealed (the next unseal reads the newest from the keyring), or
		// an older rotate that reports late (two ran at once, or an
		// unseal already installed a newer version).
		v.latestVersion = max(v.latestVersion, version)
		secret.Destroy()
		return
	}
	v.latestVersion = version
	v.secret.Destroy()
	v.secret, v.version = secret, version
}

// seal wipes and unmaps the secret, and ends any unseal in progress. It
// reports whether it was unsealed.
func (v *vault) seal() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.epoch++
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
// disabled a moment ago is refused) and hands write the secret straight
// from the locked buffer, which stays mapped until write returns. It
// returns the outcome and the client matched.
func (v *vault) serve(cred PeerCred, write func(secret []byte, version uint64) error) (outcome audit.Outcome, c *keyring.Client, err error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c, ok := v.matchLocked(cred)
	if !ok {
		return audit.Refused, c, nil
	}
	if v.secret == nil {
		return audit.SealedOutcome, c, nil
	}
	return audit.Served, c, write(v.secret.Bytes(), v.version)
}

// status fills the parts of s that the vault knows.
func (v *vault) status(s *api.Status) {
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
