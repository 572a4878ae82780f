package peer

import "strings"

// Units returns the systemd units a cgroup v2 path belongs to, named as
// systemd names them (cg_path_get_unit, cg_path_get_user_unit):
//
//   - unit: skip the leading components that are slices ("system.slice",
//     "system-cred\x2doneshot.slice"); the next component is the unit if it
//     is a valid unit name of a kind that holds processes (.service,
//     .scope, .socket, .mount, .swap). Anything below it (the sub-cgroups
//     of a unit with Delegate=) belongs to that unit.
//   - userUnit: when unit is a user manager, user@UID.service, the same
//     rule applied to the rest of the path gives the unit inside that
//     user's manager.
//
// Unit names keep their escapes ("\x2d" stays four characters, as in the
// directory name); systemd's cgroup escape, a leading "_" on names that
// would clash with kernel files, is removed. Paths in no unit ("/",
// "/system.slice", "/system.slice/not a unit") give "".
func Units(cgroup string) (unit, userUnit string) {
	unit, rest := firstUnit(cgroup)
	if unit == "" {
		return "", ""
	}
	if strings.HasPrefix(unit, "user@") && strings.HasSuffix(unit, ".service") {
		userUnit, _ = firstUnit(rest)
	}
	return unit, userUnit
}

// firstUnit skips the slices at the start of p and returns the unit named
// by the next component and the path below it.
func firstUnit(p string) (unit, rest string) {
	for {
		p = strings.TrimLeft(p, "/")
		comp, after, _ := strings.Cut(p, "/")
		name := cgUnescape(comp)
		if strings.HasSuffix(name, ".slice") {
			if !validUnitName(name, false) {
				return "", ""
			}
			p = after
			continue
		}
		if !validUnitName(name, true) || !holdsProcesses(name) {
			return "", ""
		}
		return name, after
	}
}

// cgUnescape undoes systemd's cg_escape: a "_" prefix on names that start
// with "_" or "." or would clash with the kernel's own files.
func cgUnescape(s string) string {
	return strings.TrimPrefix(s, "_")
}

// unitTypes are systemd's unit kinds; the value says whether a process can
// run in such a unit's cgroup.
var unitTypes = map[string]bool{
	"service": true, "socket": true, "scope": true, "mount": true, "swap": true,
	"target": false, "device": false, "automount": false, "timer": false, "path": false, "slice": false,
}

func holdsProcesses(name string) bool {
	return unitTypes[name[strings.LastIndexByte(name, '.')+1:]]
}

// validUnitName is systemd's unit_name_is_valid: shorter than 256 bytes, a
// known type after the last dot, only [0-9A-Za-z:_.\-] and '@' before it,
// and no leading '@'. A name with an '@' is an instance ("foo@bar.service",
// allowed when instance is true); a template ("foo@.service") is never
// valid here since no process runs in one.
func validUnitName(name string, instance bool) bool {
	if name == "" || len(name) >= 256 {
		return false
	}
	dot := strings.LastIndexByte(name, '.')
	if dot <= 0 {
		return false
	}
	if _, ok := unitTypes[name[dot+1:]]; !ok {
		return false
	}
	at := -1
	for i := 0; i < dot; i++ {
		c := name[i]
		switch {
		case c == '@':
			if at < 0 {
				at = i
			}
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == ':', c == '-', c == '_', c == '.', c == '\\':
		default:
			return false
		}
	}
	switch {
	case at == 0:
		return false
	case at < 0:
		return true
	default:
		return instance && dot > at+1
	}
}
