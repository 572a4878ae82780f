package unseal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/curve25519"

	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the spec computation")

// vector is one entry of testdata/vectors.json. Byte fields are hex.
type vector struct {
	Comment string `json:"comment"`
	// inputs
	ID        string `json:"keyring_id"`
	DataKey   string `json:"datakey"`
	Password  string `json:"password"`
	Name      string `json:"name"`
	T         uint32 `json:"t"`
	M         uint32 `json:"m_kib"`
	P         uint8  `json:"p"`
	Salt      string `json:"salt"`
	Nonce     string `json:"nonce"`
	X25519    string `json:"x25519_private"`
	Created   int64  `json:"created"`
	Secret    string `json:"secret"`
	SecretVer uint64 `json:"secret_version"`
	SecNonce  string `json:"secret_nonce"`
	// outputs
	KEK          string `json:"kek"`
	Commitment   string `json:"commitment"`
	RegistryKey  string `json:"registry_key"`
	SlotRecord   string `json:"slot_record"`
	SecretRecord string `json:"secret_record"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// specCompute derives the outputs from the inputs with bare primitives,
// following keyring/FORMAT.md and nothing in this package.
func specCompute(t *testing.T, v *vector) {
	t.Helper()
	id, dk, salt, nonce, priv := unhex(t, v.ID), unhex(t, v.DataKey), unhex(t, v.Salt), unhex(t, v.Nonce), unhex(t, v.X25519)
	kek := argon2.IDKey([]byte(v.Password), salt, v.T, v.M, v.P, 32)
	commit, _ := hkdf.Key(sha256.New, dk, id, "sealbox/v1/commitment", 32)
	rk, _ := hkdf.Key(sha256.New, dk, id, "sealbox/v1/registry", 32)
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("sealbox/v1/slot")
	aad = binary.BigEndian.AppendUint32(aad, 1)
	aad = append(aad, id...)
	aad = append(aad, 1) // kind admin
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(v.Name)))
	aad = append(aad, v.Name...)
	block, _ := aes.NewCipher(kek)
	gcm, _ := cipher.NewGCM(block)
	wrapped := gcm.Seal(nil, nonce, append(append([]byte{}, dk...), priv...), aad)

	body := []byte{2, 1} // record version 2, kind admin
	body = binary.BigEndian.AppendUint32(body, v.T)
	body = binary.BigEndian.AppendUint32(body, v.M)
	body = append(body, v.P)
	body = append(body, salt...)
	body = append(body, nonce...)
	body = append(body, wrapped...)
	body = append(body, pub...)
	body = binary.BigEndian.AppendUint64(body, uint64(v.Created))
	body = binary.BigEndian.AppendUint64(body, 0) // expires: never
	body = append(body, 0)                        // flags: no pending key
	body = append(body, make([]byte, 92)...)      // pending: zero
	mac := hmac.New(sha256.New, rk)
	mac.Write([]byte("sealbox/v1/slot-record"))
	mac.Write(id)
	mac.Write(binary.BigEndian.AppendUint16(nil, uint16(len(v.Name))))
	mac.Write([]byte(v.Name))
	mac.Write(body)
	record := mac.Sum(body)

	secAAD := append([]byte("sealbox/v1/secret"), id...)
	secAAD = binary.BigEndian.AppendUint64(secAAD, v.SecretVer)
	block, _ = aes.NewCipher(dk)
	gcm, _ = cipher.NewGCM(block)
	ct := gcm.Seal(nil, unhex(t, v.SecNonce), unhex(t, v.Secret), secAAD)
	sec := binary.BigEndian.AppendUint64(nil, v.SecretVer)
	sec = append(sec, unhex(t, v.SecNonce)...)
	sec = binary.BigEndian.AppendUint32(sec, uint32(len(ct)))
	sec = append(sec, ct...)

	got := map[string]string{
		"kek": hex.EncodeToString(kek), "commitment": hex.EncodeToString(commit),
		"registry_key": hex.EncodeToString(rk), "slot_record": hex.EncodeToString(record),
		"secret_record": hex.EncodeToString(sec),
	}
	if *update {
		v.KEK, v.Commitment, v.RegistryKey, v.SlotRecord, v.SecretRecord = got["kek"], got["commitment"], got["registry_key"], got["slot_record"], got["secret_record"]
		return
	}
	want := map[string]string{
		"kek": v.KEK, "commitment": v.Commitment, "registry_key": v.RegistryKey,
		"slot_record": v.SlotRecord, "secret_record": v.SecretRecord,
	}
	for k := range want {
		if got[k] != want[k] {
			t.Errorf("%s: spec computation gives %s, vector says %s", k, got[k], want[k])
		}
	}
}

func TestVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	for i := range vs {
		v := &vs[i]
		t.Run(v.Comment, func(t *testing.T) {
			specCompute(t, v)
			if *update {
				return
			}
			checkCode(t, v)
		})
	}
	if *update {
		out, _ := json.MarshalIndent(vs, "", "  ")
		if err := os.WriteFile("testdata/vectors.json", append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkCode runs the package's own code on the vector's inputs and checks it
// produces and opens the same bytes.
func checkCode(t *testing.T, v *vector) {
	var id [keyring.IDSize]byte
	copy(id[:], unhex(t, v.ID))
	mo := memlock.Options{AllowUnlocked: true}
	k, err := newKey(bytes.NewReader(unhex(t, v.DataKey)), id, mo)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	commit := k.Commitment()
	if hex.EncodeToString(commit[:]) != v.Commitment {
		t.Errorf("Commitment = %x, want %s", commit, v.Commitment)
	}
	if hex.EncodeToString(k.regKey()) != v.RegistryKey {
		t.Errorf("registry key = %x, want %s", k.regKey(), v.RegistryKey)
	}
	rng := bytes.NewReader(append(append(unhex(t, v.Salt), unhex(t, v.Nonce)...), unhex(t, v.X25519)...))
	params := keyring.Params{Time: v.T, MemoryKiB: v.M, Threads: v.P}
	s, err := k.sealSlot(rng, v.Name, keyring.KindAdmin, []byte(v.Password), params, v.Created)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(append(s.MarshalBody(), s.MAC[:]...)); got != v.SlotRecord {
		t.Errorf("sealSlot record =\n%s\nwant\n%s", got, v.SlotRecord)
	}

	parsed, err := keyring.ParseSlot(v.Name, unhex(t, v.SlotRecord))
	if err != nil {
		t.Fatal(err)
	}
	h := &keyring.Header{ID: id, Policy: params}
	copy(h.Commitment[:], unhex(t, v.Commitment))
	opened, err := OpenSlot(h, parsed, []byte(v.Password), mo)
	if err != nil {
		t.Fatalf("OpenSlot(vector record): %v", err)
	}
	defer opened.Destroy()
	if hex.EncodeToString(opened.dataKey()) != v.DataKey {
		t.Errorf("unwrapped DataKey = %x, want %s", opened.dataKey(), v.DataKey)
	}

	sec, err := k.encryptSecret(bytes.NewReader(unhex(t, v.SecNonce)), unhex(t, v.Secret), v.SecretVer)
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, v.SecretRecord)
	parsedSec, err := keyring.ParseSecret(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sec.Ciphertext, parsedSec.Ciphertext) || sec.Nonce != parsedSec.Nonce || sec.Version != parsedSec.Version {
		t.Errorf("encryptSecret differs from the vector's secret record")
	}
	buf, err := opened.DecryptSecret(parsedSec, mo)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Destroy()
	if hex.EncodeToString(buf.Bytes()) != v.Secret {
		t.Errorf("DecryptSecret = %x, want %s", buf.Bytes(), v.Secret)
	}
}
