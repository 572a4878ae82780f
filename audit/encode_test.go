package audit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestAppendEventMatchesJSON(t *testing.T) {
	t.Parallel()
	odd := []string{"", "plain", `q"uote\back`, "nl\ncr\rtab\t\b\f", "ctl\x00\x01\x1f", "<html>&amp;", "é ✓ 日本", "bad\xff\xfeutf8", "line\u2028sep\u2029", "\x7f"}
	times := []time.Time{time.Unix(0, 0).UTC(), time.Unix(1_800_000_000, 123456789).UTC(), time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}
	for i, s := range odd {
		for j, peer := range []*Peer{nil, {UID: 0, GID: 65534, PID: -1}, {UID: 4294967295, GID: 1, PID: 2147483647, Unit: s}} {
			ev := Event{Time: times[i%len(times)], Kind: Kind("k" + s), Actor: s, Target: s, Client: s, Peer: peer, Outcome: Outcome(s), Detail: s}
			if j == 2 {
				first := times[(i+1)%len(times)]
				ev.Count, ev.First = int64(i)*1000+1, &first
			}
			want, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if got := appendEvent(nil, &ev); !bytes.Equal(got, want) {
				t.Errorf("%q:\n got %s\nwant %s", s, got, want)
			}
		}
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	ev := Event{Time: time.Now().UTC(), Kind: "read", Client: "svc", Peer: &Peer{UID: 1, GID: 2, PID: 3}, Outcome: "served", Detail: "/v1/secret"}
	buf := make([]byte, 0, 256)
	for i := 0; i < b.N; i++ {
		buf = appendEvent(buf[:0], &ev)
	}
}
