package peer

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotCredentialAddr means the peer's socket address is not one that
	// systemd binds for a LoadCredential= request.
	ErrNotCredentialAddr = errors.New("the peer address is not a systemd credential request")

	// ErrForgedRequest means the peer's address names a unit the peer is
	// not systemd acting for: anyone can bind any abstract address.
	ErrForgedRequest = errors.New("the credential request does not come from systemd for the unit it names")
)

// CredentialRequest is what systemd asks for when a unit's LoadCredential=
// names an AF_UNIX socket: the credential ID of unit Unit.
type CredentialRequest struct {
	Unit string // the unit being started, e.g. "foo.service"
	ID   string // the credential's name, as in LoadCredential=ID:/path
}

// LoadCredential reads the credential request on c (the unit and credential
// name systemd put in its socket address) and checks it against what the
// kernel attests: the peer runs as root, in the cgroup of the very unit the
// address names. systemd 252 connects from a helper (sd-mkdcreds, uid 0)
// already in the unit's cgroup, before the unit drops privileges.
//
// Errors: ErrNotCredentialAddr for any other address, ErrForgedRequest
// when the peer is not in that unit or not root, and whatever Resolve
// returns (ErrNoPidfd, ErrPeerGone, ...). On error the Identity holds what
// was attested, for the audit trail. Requests from a user's manager
// (systemd --user) are not supported: their peer is not root.
func LoadCredential(c *net.UnixConn) (CredentialRequest, Identity, error) {
	addr, err := PeerAddr(c)
	if err != nil {
		return CredentialRequest{}, Identity{}, err
	}
	req, err := ParseCredentialAddr(addr)
	if err != nil {
		cred, _ := Creds(c)
		return CredentialRequest{}, Identity{Cred: cred}, err
	}
	id, err := Resolve(c)
	if err != nil {
		return CredentialRequest{}, id, err
	}
	if id.UID != 0 || id.Unit != req.Unit {
		return CredentialRequest{}, id, fmt.Errorf("%w: the address names %s, the peer is uid %d in %q",
			ErrForgedRequest, req.Unit, id.UID, id.Cgroup)
	}
	return req, id, nil
}

// PeerAddr returns the raw address c's peer socket is bound to, as
// getpeername(2) gives it: an abstract address starts with a NUL byte, an
// unbound peer gives an empty address. (net.UnixConn.RemoteAddr shows an
// abstract address with a leading "@", which a file path can also start
// with.)
func PeerAddr(c *net.UnixConn) ([]byte, error) {
	var addr []byte
	err := control(c, func(fd int) error {
		var rsa unix.RawSockaddrUnix
		n := uint32(unsafe.Sizeof(rsa))
		_, _, e := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
		if e != 0 {
			return fmt.Errorf("getpeername: %w", e)
		}
		const pathOff = unsafe.Offsetof(rsa.Path)
		if n <= uint32(pathOff) {
			return nil
		}
		n -= uint32(pathOff)
		if n > uint32(len(rsa.Path)) {
			n = uint32(len(rsa.Path))
		}
		addr = make([]byte, n)
		for i := range addr {
			addr[i] = byte(rsa.Path[i])
		}
		// A path address ends at its first NUL (the kernel counts the
		// terminating one); an abstract address is all n bytes.
		if len(addr) > 0 && addr[0] != 0 {
			if i := bytes.IndexByte(addr, 0); i >= 0 {
				addr = addr[:i]
			}
		}
		return nil
	})
	return addr, err
}

// ParseCredentialAddr parses the abstract socket address systemd binds its
// end of a LoadCredential= connection to, as PeerAddr returns it:
//
//	"\x00" RANDOM "/unit/" UNIT "/" ID
//
// where RANDOM is a random 64-bit number in lowercase hex (systemd 252
// does not pad it: 1 to 16 digits), UNIT a unit name of a kind that takes LoadCredential= (.service,
// .socket, .mount, .swap), and ID a credential name as systemd allows
// them (1 to 255 printable ASCII bytes, no "/" or ":", not "." or "..").
// Anything else, a path address or trailing bytes included, is refused
// with ErrNotCredentialAddr.
//
// The address proves nothing: any local process can bind any abstract
// name. LoadCredential checks it against the peer's attested unit.
func ParseCredentialAddr(addr []byte) (CredentialRequest, error) {
	bad := func(why string) (CredentialRequest, error) {
		return CredentialRequest{}, fmt.Errorf("%w (%s): %q", ErrNotCredentialAddr, why, addr)
	}
	if len(addr) > len(unix.RawSockaddrUnix{}.Path) {
		return bad("too long")
	}
	rest, ok := bytes.CutPrefix(addr, []byte{0})
	if !ok {
		return bad("not an abstract address")
	}
	random, rest, ok := bytes.Cut(rest, []byte("/unit/"))
	if !ok {
		return bad("no /unit/")
	}
	if len(random) == 0 || len(random) > 16 {
		return bad("random part")
	}
	for _, c := range random {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return bad("random part")
		}
	}
	unit, id, ok := bytes.Cut(rest, []byte("/"))
	if !ok {
		return bad("no credential name")
	}
	if !validUnitName(string(unit), true) {
		return bad("unit name")
	}
	switch t := unit[bytes.LastIndexByte(unit, '.')+1:]; string(t) {
	case "service", "socket", "mount", "swap":
	default:
		return bad("unit type")
	}
	if !validCredentialName(id) {
		return bad("credential name")
	}
	return CredentialRequest{Unit: string(unit), ID: string(id)}, nil
}

// validCredentialName is systemd's credential_name_valid: a valid file
// name that is also a valid $LISTEN_FDNAMES name.
func validCredentialName(id []byte) bool {
	if len(id) == 0 || len(id) > 255 || string(id) == "." || string(id) == ".." {
		return false
	}
	for _, c := range id {
		if c < ' ' || c > '~' || c == '/' || c == ':' {
			return false
		}
	}
	return true
}
