package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendEvent encodes ev exactly as encoding/json would (same fields, same
// order, same omissions, same escapes), without reflection: it runs once
// per client read. TestAppendEventMatchesJSON holds it to that.
func appendEvent(b []byte, ev *Event) []byte {
	b = append(b, `{"time":"`...)
	b = ev.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":`...)
	b = appendString(b, string(ev.Kind))
	for _, f := range [...]struct {
		key, val string
	}{{`,"actor":`, ev.Actor}, {`,"target":`, ev.Target}, {`,"client":`, ev.Client}} {
		if f.val != "" {
			b = append(b, f.key...)
			b = appendString(b, f.val)
		}
	}
	if ev.Peer != nil {
		b = append(b, `,"peer":{"uid":`...)
		b = strconv.AppendUint(b, uint64(ev.Peer.UID), 10)
		b = append(b, `,"gid":`...)
		b = strconv.AppendUint(b, uint64(ev.Peer.GID), 10)
		b = append(b, `,"pid":`...)
		b = strconv.AppendInt(b, int64(ev.Peer.PID), 10)
		if ev.Peer.Unit != "" {
			b = append(b, `,"unit":`...)
			b = appendString(b, ev.Peer.Unit)
		}
		b = append(b, '}')
	}
	b = append(b, `,"outcome":`...)
	b = appendString(b, string(ev.Outcome))
	if ev.Detail != "" {
		b = append(b, `,"detail":`...)
		b = appendString(b, ev.Detail)
	}
	if ev.Count != 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, ev.Count, 10)
	}
	if ev.First != nil {
		b = append(b, `,"first":"`...)
		b = ev.First.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string the way encoding/json does (HTML
// characters and U+2028/U+2029 escaped), except that each invalid UTF-8
// byte becomes U+FFFD as it is, not the escape \ufffd: decoding gives that
// rune, and encoding it again must give the same bytes (the canonical form
// a verifier checks).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\uFFFD"...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
