package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendEventMatchesJSON(t *testing.T) {
	t.Parallel()
	odd := []string{"", "plain", `q"uote\back`, "nl\ncr\rtab\t\b\f", "ctl\x00\x01\x1f", "<html>&amp;", "é ✓ 日本", "bad\xff\xfeutf8", "line\u2028sep\u2029", "\x7f"}
	times := []time.Time{time.Unix(0, 0).UTC(), time.Unix(1_800_000_000, 123456789).UTC(), time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}
	for i, s := range odd {
		for j, peer := range []*Peer{nil, {UID: 0, GID: 65534, PID: -1}, {UID: 4294967295, GID: 1, PID: 2147483647, Unit: s}} {
			mk := func(s string, peer *Peer) Event {
				ev := Event{Time: times[i%len(times)], Kind: Kind("k" + s), Actor: s, Target: s, Client: s, Peer: peer, Outcome: Outcome(s), Detail: s}
				if j == 2 {
					first := times[(i+1)%len(times)]
					ev.Count, ev.First = int64(i)*1000+1, &first
				}
				return ev
			}
			ev := mk(s, peer)
			// As encoding/json writes the same event with each invalid byte
			// already U+FFFD (it would write the escape \ufffd instead).
			vp := peer
			if peer != nil && peer.Unit != "" {
				vp = &Peer{UID: peer.UID, GID: peer.GID, PID: peer.PID, Unit: perByteValid(peer.Unit)}
			}
			want, err := json.Marshal(mk(perByteValid(s), vp))
			if err != nil {
				t.Fatal(err)
			}
			got := appendEvent(nil, &ev)
			if !bytes.Equal(got, want) {
				t.Errorf("%q:\n got %s\nwant %s", s, got, want)
			}
			// Canonical: decoding and encoding again gives the same bytes.
			var back Event
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if again := appendEvent(nil, &back); !bytes.Equal(again, got) {
				t.Errorf("%q: not canonical:\n%s\n%s", s, got, again)
			}
		}
	}
}

// perByteValid replaces each invalid UTF-8 byte of s by U+FFFD.
func perByteValid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func BenchmarkAppendEvent(b *testing.B) {
	ev := Event{Time: time.Now().UTC(), Kind: "read", Client: "svc", Peer: &Peer{UID: 1, GID: 2, PID: 3}, Outcome: "served", Detail: "/v1/secret"}
	buf := make([]byte, 0, 256)
	for i := 0; i < b.N; i++ {
		buf = appendEvent(buf[:0], &ev)
	}
}
