package unattended

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sealbox/sealbox/internal/fleettest"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/tpm2"
)

func newKEK(t *testing.T) []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

func tangBinding(t *testing.T, s *fleettest.Tang, kek []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	adv, err := tang.Fetch(ctx, tang.Client(time.Second), s.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := adv.Trust(s.Thumbprint()); err != nil {
		t.Fatal(err)
	}
	b, err := NewTang(adv, kek)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestThresholdTwoOfThreeTang(t *testing.T) {
	t.Parallel()
	servers := []*fleettest.Tang{fleettest.StartTang(t), fleettest.StartTang(t), fleettest.StartTang(t)}
	env := &Env{Timeout: 2 * time.Second, DialTimeout: time.Second}
	var members []Member
	for _, s := range servers {
		members = append(members, Member{Kind: keyring.KindTang, Binding: tangBinding(t, s, newKEK(t))})
	}
	kek := newKEK(t)
	b, err := NewThreshold(t.Context(), env, 2, members, kek)
	if err != nil {
		t.Fatal(err)
	}
	if d := Describe(keyring.KindThreshold, b); !strings.HasPrefix(d, "threshold 2 of 3: tang http://127.0.0.1:") {
		t.Fatalf("describe: %q", d)
	}
	open := func() Result {
		dst := make([]byte, KeySize)
		r := Open(t.Context(), env, keyring.KindThreshold, b, dst)
		if r.Err == nil && !bytes.Equal(dst, kek) {
			t.Fatal("the threshold opened to a wrong key")
		}
		return r
	}
	if r := open(); r.Err != nil {
		t.Fatalf("all up: %v", r.Err)
	}
	servers[0].Stop()
	if r := open(); r.Err != nil {
		t.Fatalf("one down: %v", r.Err)
	}
	servers[1].Stop()
	start := time.Now()
	r := open()
	if r.Err == nil || !Transient(r.Err) || len(r.Members) != 3 {
		t.Fatalf("two down: %v (transient %v)", r.Err, Transient(r.Err))
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("two refused servers took %v", time.Since(start))
	}
	// A server that lost the key for good is not worth waiting for; one
	// that is down may come back.
	servers[1].Start()
	servers[1].Rotate()
	restore1 := servers[1].DropHidden()
	servers[2].Stop()
	if r := open(); r.Err == nil || !Transient(r.Err) || Answered(r.Err) {
		t.Fatalf("one down, one key gone, one down: %v (transient %v)", r.Err, Transient(r.Err))
	}
	servers[2].Start()
	servers[2].Rotate()
	restore2 := servers[2].DropHidden()
	// Only the servers' "no" keeps it from 2 shares: tried again slowly.
	r = open()
	if r.Err == nil || Transient(r.Err) || !Answered(r.Err) || !errors.Is(r.Members[1].Err, tang.ErrKeyGone) {
		t.Fatalf("one down, two keys gone: %v (transient %v, answered %v)", r.Err, Transient(r.Err), Answered(r.Err))
	}
	// The servers take it back (a restore from backup): it opens.
	restore1()
	restore2()
	if r := open(); r.Err != nil {
		t.Fatalf("after the keys came back: %v", r.Err)
	}
}

// A member that can never give its share (a binding that does not parse
// as its kind) is permanent, not a server's "no": a threshold is tried
// again only if the members that said no could still make up t.
func TestThresholdPermanentAndAnswered(t *testing.T) {
	t.Parallel()
	servers := []*fleettest.Tang{fleettest.StartTang(t), fleettest.StartTang(t)}
	env := &Env{Timeout: 2 * time.Second, DialTimeout: time.Second}
	bad := Member{Kind: keyring.KindTang, Binding: []byte("not a JWE")}
	good := func(s *fleettest.Tang) Member {
		return Member{Kind: keyring.KindTang, Binding: tangBinding(t, s, newKEK(t))}
	}
	open := func(members ...Member) Result {
		th := &Threshold{T: 2, Members: members}
		return Open(t.Context(), env, keyring.KindThreshold, th.Marshal(), make([]byte, KeySize))
	}
	oneBad := []Member{bad, good(servers[0]), good(servers[1])}
	twoBad := []Member{bad, bad, good(servers[0])}
	if r := open(oneBad...); r.Err != nil || !errors.Is(r.Members[0].Err, tang.ErrBadJWE) {
		t.Fatalf("one bad member, two up: two shares are enough: %v", r.Err)
	}
	for _, s := range servers {
		s.Rotate()
		s.DropHidden()
	}
	if r := open(oneBad...); r.Err == nil || Transient(r.Err) || !Answered(r.Err) {
		t.Fatalf("one bad member, two keys gone: %v (transient %v, answered %v)", r.Err, Transient(r.Err), Answered(r.Err))
	}
	if r := open(twoBad...); r.Err == nil || Transient(r.Err) || Answered(r.Err) {
		t.Fatalf("two bad members, one key gone: %v (transient %v, answered %v)", r.Err, Transient(r.Err), Answered(r.Err))
	}
}

// Two of three servers accept and never answer: the threshold fails at
// the attempt's deadline, not later; with one hung and two up it opens at
// once, without waiting for the hung one.
func TestThresholdGivesUpAtTheDeadline(t *testing.T) {
	t.Parallel()
	servers := []*fleettest.Tang{fleettest.StartTang(t), fleettest.StartTang(t), fleettest.StartTang(t)}
	env := &Env{Timeout: time.Second, DialTimeout: 500 * time.Millisecond}
	var members []Member
	for _, s := range servers {
		members = append(members, Member{Kind: keyring.KindTang, Binding: tangBinding(t, s, newKEK(t))})
	}
	kek := newKEK(t)
	b, err := NewThreshold(t.Context(), env, 2, members, kek)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, KeySize)
	servers[2].Hang()
	start := time.Now()
	if r := Open(t.Context(), env, keyring.KindThreshold, b, dst); r.Err != nil || !bytes.Equal(dst, kek) {
		t.Fatalf("two up, one hung: %v", r.Err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("two up, one hung: waited %v for the hung one", d)
	}
	servers[1].Hang()
	start = time.Now()
	r := Open(t.Context(), env, keyring.KindThreshold, b, dst)
	d := time.Since(start)
	if r.Err == nil || !Transient(r.Err) {
		t.Fatalf("two hung: %v", r.Err)
	}
	if d < 900*time.Millisecond || d > 2500*time.Millisecond {
		t.Fatalf("two hung: gave up after %v, want about the 1 s deadline", d)
	}
	t.Logf("two of three hung: gave up after %v", d.Round(time.Millisecond))
}

func TestParseThresholdRefuses(t *testing.T) {
	t.Parallel()
	good := (&Threshold{T: 1, Members: []Member{{keyring.KindTang, []byte("x")}, {keyring.KindTPM2, []byte("yy")}}}).Marshal()
	if th, err := ParseThreshold(good); err != nil || th.T != 1 || len(th.Members) != 2 || string(th.Members[1].Binding) != "yy" {
		t.Fatalf("good: %v", err)
	}
	if !bytes.Equal((&Threshold{T: 1, Members: []Member{{keyring.KindTang, []byte("x")}, {keyring.KindTPM2, []byte("yy")}}}).Marshal(), good) {
		t.Fatal("marshal")
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"version 2":      append([]byte{2}, good[1:]...),
		"t 0":            {1, 0, 2},
		"t > n":          {1, 3, 2},
		"n 17":           {1, 1, 17},
		"truncated":      good[:len(good)-1],
		"trailing":       append(append([]byte{}, good...), 0),
		"member kind 1":  {1, 1, 1, 1, 0, 1, 'x'},
		"nested":         {1, 1, 1, 6, 0, 1, 'x'},
		"empty member":   {1, 1, 1, 4, 0, 0},
		"length too big": {1, 1, 1, 4, 0, 9, 'x'},
	} {
		if _, err := ParseThreshold(b); !errors.Is(err, ErrBinding) {
			t.Errorf("%s: %v", name, err)
		}
		if d := Describe(keyring.KindThreshold, b); d != "threshold (unreadable binding)" {
			t.Errorf("%s: described as %q", name, d)
		}
	}
}

// A TPM slot opens, fails cleanly after a PCR extend, says it needs a
// reseal, and Remake seals it again to the new values.
func TestTPM2DriftAndRemake(t *testing.T) {
	t.Parallel()
	tpm := fleettest.StartSWTPM(t)
	env := &Env{Timeout: 5 * time.Second, TPM: tpm2.Config{TCTI: tpm.TCTI()}}
	kek := newKEK(t)
	b, err := NewTPM2(t.Context(), env, kek, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, KeySize)
	if r := Open(t.Context(), env, keyring.KindTPM2, b, dst); r.Err != nil || !bytes.Equal(dst, kek) || r.Method != "tpm2 sha256:7" {
		t.Fatalf("open: %v %q", r.Err, r.Method)
	}
	if need, _, err := NeedsReseal(t.Context(), env, keyring.KindTPM2, b); err != nil || need {
		t.Fatalf("before the extend: need=%v %v", need, err)
	}
	tpm.Extend(7)
	r := Open(t.Context(), env, keyring.KindTPM2, b, dst)
	if !errors.Is(r.Err, tpm2.ErrPolicy) || Transient(r.Err) {
		t.Fatalf("after the extend: %v", r.Err)
	}
	need, why, err := NeedsReseal(t.Context(), env, keyring.KindTPM2, b)
	if err != nil || !need || !strings.Contains(why, "sha256:7") {
		t.Fatalf("needs reseal: %v %q %v", need, why, err)
	}
	kek2 := newKEK(t)
	b2, err := Remake(t.Context(), env, keyring.KindTPM2, b, kek2)
	if err != nil {
		t.Fatal(err)
	}
	if r := Open(t.Context(), env, keyring.KindTPM2, b2, dst); r.Err != nil || !bytes.Equal(dst, kek2) {
		t.Fatalf("resealed: %v", r.Err)
	}
	// A threshold of TPM and a Tang server that is down: one of two opens
	// with the TPM alone; the drifted member makes the whole need a reseal.
	tg := fleettest.StartTang(t)
	th, err := NewThreshold(t.Context(), env, 1, []Member{{keyring.KindTPM2, b2}, {keyring.KindTang, tangBinding(t, tg, newKEK(t))}}, kek)
	if err != nil {
		t.Fatal(err)
	}
	tg.Stop()
	if r := Open(t.Context(), env, keyring.KindThreshold, th, dst); r.Err != nil || !bytes.Equal(dst, kek) {
		t.Fatalf("1 of {tpm2, tang down}: %v", r.Err)
	}
	tpm.Extend(7)
	if need, _, err := NeedsReseal(t.Context(), env, keyring.KindThreshold, th); err != nil || !need {
		t.Fatalf("threshold after extend: %v %v", need, err)
	}
}
