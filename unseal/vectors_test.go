package unseal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/curve25519"

	"github.com/sealbox/sealbox/audit"
	"github.com/sealbox/sealbox/internal/memlock"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/shamir"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/tpm2"
	"github.com/sealbox/sealbox/unseal/unattended"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the spec computation")

// vectorFile is testdata/vectors.json: inputs and expected outputs, hex
// unless noted, with a note per output saying what it is.
type vectorFile struct {
	Comment string            `json:"comment"`
	Inputs  map[string]string `json:"inputs"`
	Params  map[string]int64  `json:"params"`
	Outputs map[string]string `json:"outputs"`
	Notes   map[string]string `json:"notes"`
}

// The inputs. Byte fields are hex; texts are plain (passwords, codes,
// names, units, audit bodies).
var vectorInputs = map[string]string{
	"keyring_id":        "000102030405060708090a0b0c0d0e0f",
	"datakey":           "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
	"datakey_new":       "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
	"alice_password":    "correct horse battery staple",
	"alice_salt":        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
	"alice_nonce":       "808182838485868788898a8b",
	"alice_hand":        "909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
	"alice_escrow_nce":  "b0b1b2b3b4b5b6b7b8b9babb",
	"dave_code":         "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567",
	"dave_salt":         "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
	"dave_nonce":        "e0e1e2e3e4e5e6e7e8e9eaeb",
	"dave_hand":         "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f",
	"dave_escrow_nce":   "101112131415161718191a1b",
	"bob_password":      "bob's own long passphrase",
	"bob_salt":          "1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b",
	"bob_nonce":         "3c3d3e3f4041424344454647",
	"bob_hand":          "48494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f6061626364656667",
	"bob_escrow_nce":    "68696a6b6c6d6e6f70717273",
	"bob_escrow_nce2":   "7475767778797a7b7c7d7e7f",
	"bob_pending_nce":   "808182838485868788898a8c",
	"carol_password":    "carol picks another one",
	"carol_salt":        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
	"carol_nonce":       "c0c1c2c3c4c5c6c7c8c9cacc",
	"carol_x25519":      "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef",
	"carol_escrow_nce":  "f0f1f2f3f4f5f6f7f8f9fafc",
	"erin_password":     "erin types this one",
	"erin_salt":         "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
	"erin_nonce":        "2122232425262728292a2b2c",
	"erin_x25519":       "3132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f50",
	"secret":            "746865206d617374657220736563726574",
	"secret_nonce":      "a0a1a2a3a4a5a6a7a8a9aaab",
	"event_1_body":      `{"time":"2026-01-01T00:00:00Z","kind":"init","actor":"alice","target":"alice","outcome":"ok"}`,
	"event_2_body":      `{"time":"2026-01-01T00:00:01Z","kind":"unseal","actor":"zed","outcome":"wrong_password"}`,
	"read_1_body":       `{"time":"2026-01-01T00:00:02Z","kind":"read","client":"web","peer":{"uid":33,"gid":33,"pid":4242,"unit":"web.service"},"outcome":"served","detail":"/v1/secret"}`,
	"audit_key_old":     "55555555555555555555555555555555aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	"key_history_nonce": "b1b2b3b4b5b6b7b8b9babbbc",
	// Unattended slots and the identity.
	"tang_server_d":   "00" + strings.Repeat("a5", 65),
	"tang_url":        "http://192.0.2.10",
	"tang_c":          "01" + strings.Repeat("23", 65),
	"tang_iv":         "d1d2d3d4d5d6d7d8d9dadbdc",
	"tang_kek":        "e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff00",
	"tang_nonce":      "111213141516171819202122",
	"tang_hand":       "2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40",
	"tang_escrow_nce": "313233343536373839404142",
	// A binding tpm2.Seal made on a fresh swtpm (PCR 7 all zero) of
	// tpm2_kek: its blobs are the TPM's own, not computable here.
	"tpm2_binding":    "01000b000000808b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b0050004e0008000b0000041200208b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b00100020e035c07fadaa68805215c88a2a7d8d095f92c832214ae82bf6018ab4996dba7500a0009e002044feaaa97e21183c11abdb4f1159fc85cc7e268ef82904de708cd99b23d9ba140010ad03e665ce23e0601cc04f0b7e1e04da404d9bebeae076fd4e785fd0bf79dee8cab8d097ee7fa3327072d2f11b69f601f8cca09a4777864645d59174daf9cabbe76460bdd5ace557a8f7cffc56bb435a32c04fb09ef762be0dd9b275500c1c8f4ed2f3aa87c683a57d7e1470e8e74797cdf2d0322bd585e0b6ed",
	"tpm2_kek":        "c0ffee00c0ffee01c0ffee02c0ffee03c0ffee04c0ffee05c0ffee06c0ffee07",
	"tpm2_nonce":      "414243444546474849505152",
	"tpm2_hand":       "5152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70",
	"tpm2_escrow_nce": "616263646566676869707172",
	"site_kek":        "7172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f90",
	"site_coef":       "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
	"site_c1":         "01" + strings.Repeat("31", 65),
	"site_c2":         "01" + strings.Repeat("32", 65),
	"site_c3":         "01" + strings.Repeat("33", 65),
	"site_iv1":        "a1a2a3a4a5a6a7a8a9aaabac",
	"site_iv2":        "b1b2b3b4b5b6b7b8b9babbbd",
	"site_iv3":        "c1c2c3c4c5c6c7c8c9cacbcd",
	"site_nonce":      "818283848586878889909192",
	"site_hand":       "9192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0",
	"site_escrow_nce": "a1a2a3a4a5a6a7a8a9b0b1b2",
	"identity":        "f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f10",
	"identity_nonce":  "c1c2c3c4c5c6c7c8c9d0d1d2",
}

var vectorParams = map[string]int64{
	"admin_t": 2, "admin_m_kib": 256, "admin_p": 2,
	"code_t": 1, "code_m_kib": 8192, "code_p": 1,
	"created": 1767225600, "dave_expires": 1767312000, "secret_version": 1,
	"root_generation": 5, "history_events_last": 1, "history_reads_last": 1,
}

func vin(t *testing.T, k string) []byte {
	t.Helper()
	v, ok := vectorInputs[k]
	if !ok {
		t.Fatalf("no input %q", k)
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		t.Fatalf("input %q: %v", k, err)
	}
	return b
}

// The spec computation: bare primitives, following keyring/FORMAT.md.

func specHKDF(ikm, salt []byte, info string) []byte {
	k, _ := hkdf.Key(sha256.New, ikm, salt, info, 32)
	return k
}

func specGCM(key, nonce, plain, aad []byte) []byte {
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	return g.Seal(nil, nonce, plain, aad)
}

func specHMAC(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func specPlace(label string, id []byte, kind byte, name string) []byte {
	b := append([]byte(label), id...)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

func u64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// specSlot3 is a version-3 slot record of kind 1 to 3.
func specSlot3(kind byte, created, expires int64, flags byte, t, m uint32, p byte, salt, nonce, wrapped, escNonce, escrow, pendNonce, pending []byte) []byte {
	body := binary.BigEndian.AppendUint32(nil, t)
	body = binary.BigEndian.AppendUint32(body, m)
	body = append(body, p)
	body = cat(body, salt, nonce, wrapped, escNonce, escrow)
	if pending == nil {
		pendNonce, pending = make([]byte, 12), make([]byte, 48)
	}
	body = cat(body, pendNonce, pending)
	h := cat([]byte{3, kind}, u64(created), u64(expires), []byte{flags}, binary.BigEndian.AppendUint16(nil, uint16(len(body))))
	return cat(h, body)
}

func specCompute(t *testing.T) (map[string]string, map[string]string) {
	out, notes := map[string]string{}, map[string]string{}
	put := func(k string, v []byte, note string) { out[k], notes[k] = hex.EncodeToString(v), note }
	id, dk, dk2 := vin(t, "keyring_id"), vin(t, "datakey"), vin(t, "datakey_new")
	P := vectorParams
	at, am, ap := uint32(P["admin_t"]), uint32(P["admin_m_kib"]), byte(P["admin_p"])
	ct, cm, cp := uint32(P["code_t"]), uint32(P["code_m_kib"]), byte(P["code_p"])
	created := P["created"]

	commit := specHKDF(dk, id, "sealbox/v1/commitment")
	commit2 := specHKDF(dk2, id, "sealbox/v1/commitment")
	rk := specHKDF(dk, id, "sealbox/v2/root-key")
	ek := specHKDF(dk, id, "sealbox/v2/escrow-key")
	ek2 := specHKDF(dk2, id, "sealbox/v2/escrow-key")
	ak := specHKDF(dk, id, "sealbox/v1/audit-key")
	rk1 := specHKDF(dk, id, "sealbox/v1/registry")
	put("commitment", commit, "HKDF(datakey, keyring_id, sealbox/v1/commitment)")
	put("commitment_new", commit2, "the same for datakey_new")
	put("root_key", rk, "RK = HKDF(datakey, keyring_id, sealbox/v2/root-key)")
	put("escrow_key", ek, "EK = HKDF(datakey, keyring_id, sealbox/v2/escrow-key)")
	put("audit_key", ak, "AK = HKDF(datakey, keyring_id, sealbox/v1/audit-key)")
	put("legacy_registry_key", rk1, "format 1: RK1 = HKDF(datakey, keyring_id, sealbox/v1/registry)")

	// alice: an admin slot.
	kekA := argon2.IDKey([]byte(vectorInputs["alice_password"]), vin(t, "alice_salt"), at, am, ap, 32)
	put("alice_kek", kekA, "Argon2id(alice_password, alice_salt, admin_t, admin_m_kib, admin_p)")
	wrapA := specGCM(kekA, vin(t, "alice_nonce"), cat(dk, vin(t, "alice_hand")), specPlace("sealbox/v2/slot", id, 1, "alice"))
	escA := specGCM(ek, vin(t, "alice_escrow_nce"), vin(t, "alice_hand"), specPlace("sealbox/v2/escrow", id, 1, "alice"))
	put("slot_alice", specSlot3(1, created, 0, 0, at, am, ap, vin(t, "alice_salt"), vin(t, "alice_nonce"), wrapA, vin(t, "alice_escrow_nce"), escA, nil, nil),
		"slots/alice: version-3 admin slot sealed with datakey")

	// dave: an invite (code slot) with an expiry.
	code := []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") // dave_code, normalized
	kekD := argon2.IDKey(code, vin(t, "dave_salt"), ct, cm, cp, 32)
	wrapD := specGCM(kekD, vin(t, "dave_nonce"), cat(dk, vin(t, "dave_hand")), specPlace("sealbox/v2/slot", id, 3, "dave"))
	escD := specGCM(ek, vin(t, "dave_escrow_nce"), vin(t, "dave_hand"), specPlace("sealbox/v2/escrow", id, 3, "dave"))
	put("slot_dave", specSlot3(3, created, P["dave_expires"], 0, ct, cm, cp, vin(t, "dave_salt"), vin(t, "dave_nonce"), wrapD, vin(t, "dave_escrow_nce"), escD, nil, nil),
		"slots/dave: version-3 invite slot under dave_code normalized (ABCDEFGHIJKLMNOPQRSTUVWXYZ234567), code parameters, expires dave_expires")

	// bob: an admin slot, then handed over to datakey_new by a rekey.
	kekB := argon2.IDKey([]byte(vectorInputs["bob_password"]), vin(t, "bob_salt"), at, am, ap, 32)
	wrapB := specGCM(kekB, vin(t, "bob_nonce"), cat(dk, vin(t, "bob_hand")), specPlace("sealbox/v2/slot", id, 1, "bob"))
	escB := specGCM(ek, vin(t, "bob_escrow_nce"), vin(t, "bob_hand"), specPlace("sealbox/v2/escrow", id, 1, "bob"))
	put("slot_bob", specSlot3(1, created, 0, 0, at, am, ap, vin(t, "bob_salt"), vin(t, "bob_nonce"), wrapB, vin(t, "bob_escrow_nce"), escB, nil, nil),
		"slots/bob before the rekey")
	pk := specHKDF(vin(t, "bob_hand"), id, "sealbox/v2/pending-key")
	put("bob_pending_key", pk, "PK = HKDF(bob_hand, keyring_id, sealbox/v2/pending-key)")
	escB2 := specGCM(ek2, vin(t, "bob_escrow_nce2"), vin(t, "bob_hand"), specPlace("sealbox/v2/escrow", id, 1, "bob"))
	pend := specGCM(pk, vin(t, "bob_pending_nce"), dk2, cat(specPlace("sealbox/v2/pending", id, 1, "bob"), commit2))
	put("slot_bob_pending", specSlot3(1, created, 0, 1, at, am, ap, vin(t, "bob_salt"), vin(t, "bob_nonce"), wrapB, vin(t, "bob_escrow_nce2"), escB2, vin(t, "bob_pending_nce"), pend),
		"slots/bob after a rekey to datakey_new: escrow under datakey_new's EK (bob_escrow_nce2), pending (bob_pending_nce) bound to commitment_new")

	// carol: a format-1 slot record (version 2) with its record MAC, and the
	// same slot upgraded to a legacy-wrap version-3 record.
	kekC := argon2.IDKey([]byte(vectorInputs["carol_password"]), vin(t, "carol_salt"), at, am, ap, 32)
	priv := vin(t, "carol_x25519")
	pub, _ := curve25519.X25519(priv, curve25519.Basepoint)
	v1aad := func(kind byte, name string) []byte {
		return cat([]byte("sealbox/v1/slot"), binary.BigEndian.AppendUint32(nil, 1), id, []byte{kind}, binary.BigEndian.AppendUint16(nil, uint16(len(name))), []byte(name))
	}
	wrapC := specGCM(kekC, vin(t, "carol_nonce"), cat(dk, priv), v1aad(1, "carol"))
	params := cat(binary.BigEndian.AppendUint32(nil, at), binary.BigEndian.AppendUint32(nil, am), []byte{ap})
	bodyC := cat([]byte{2, 1}, params, vin(t, "carol_salt"), vin(t, "carol_nonce"), wrapC, pub, u64(created), u64(0), []byte{0}, make([]byte, 92))
	legacyMACOf := func(label, name string, body []byte) []byte {
		return specHMAC(rk1, []byte(label), id, binary.BigEndian.AppendUint16(nil, uint16(len(name))), []byte(name), body)
	}
	put("legacy_slot_carol", cat(bodyC, legacyMACOf("sealbox/v1/slot-record", "carol", bodyC)), "format 1: slots/carol, record version 2, with its record MAC under RK1")
	handC := specHKDF(dk, id, "sealbox/v2/legacy-hand-over"+string(binary.BigEndian.AppendUint16(nil, 5))+"carol")
	put("carol_hand", handC, "H of the upgraded slot: HKDF(datakey, keyring_id, sealbox/v2/legacy-hand-over || u16(5) || carol)")
	escC := specGCM(ek, vin(t, "carol_escrow_nce"), handC, specPlace("sealbox/v2/escrow", id, 1, "carol"))
	put("slot_carol_upgraded", specSlot3(1, created, 0, 2, at, am, ap, vin(t, "carol_salt"), vin(t, "carol_nonce"), wrapC, vin(t, "carol_escrow_nce"), escC, nil, nil),
		"slots/carol after the upgrade: legacy-wrap flag, the format-1 payload, escrow of carol_hand (carol_escrow_nce)")

	// erin: a format-1 slot record of version 1.
	kekE := argon2.IDKey([]byte(vectorInputs["erin_password"]), vin(t, "erin_salt"), at, am, ap, 32)
	privE := vin(t, "erin_x25519")
	pubE, _ := curve25519.X25519(privE, curve25519.Basepoint)
	wrapE := specGCM(kekE, vin(t, "erin_nonce"), cat(dk, privE), v1aad(1, "erin"))
	bodyE := cat([]byte{1, 1}, params, vin(t, "erin_salt"), vin(t, "erin_nonce"), wrapE, pubE, u64(created))
	put("legacy_slot_erin_v1", cat(bodyE, legacyMACOf("sealbox/v1/slot-record", "erin", bodyE)), "format 1: slots/erin, record version 1 (207 bytes), with its record MAC")

	// Clients.
	clientRec := func(flags byte, uid, gid uint32, status byte, unit string) []byte {
		b := cat([]byte{2, flags}, binary.BigEndian.AppendUint32(nil, uid), binary.BigEndian.AppendUint32(nil, gid), []byte{status}, u64(created), u64(created+60), []byte{byte(len(unit))}, []byte(unit))
		return b
	}
	put("client_web", clientRec(3, 33, 33, 1, ""), "clients/web: uid 33 and gid 33, active")
	put("client_api", clientRec(0, 0, 0, 2, "api.service"), "clients/api: unit api.service, any uid, disabled")
	put("client_db", clientRec(1, 70, 0, 1, "db@main.service"), "clients/db: unit db@main.service run as uid 70, active")
	lbody := cat([]byte{1}, binary.BigEndian.AppendUint32(nil, 33), binary.BigEndian.AppendUint32(nil, 33), []byte{1, 1}, u64(created), u64(created+60))
	put("legacy_client_web", cat(lbody, legacyMACOf("sealbox/v1/client-record", "web", lbody)), "format 1: clients/web, uid 33 gid 33 active, with its record MAC")

	// The secret and the header.
	secAAD := cat([]byte("sealbox/v1/secret"), id, u64(P["secret_version"]))
	ctext := specGCM(dk, vin(t, "secret_nonce"), vin(t, "secret"), secAAD)
	secret := cat(u64(P["secret_version"]), vin(t, "secret_nonce"), binary.BigEndian.AppendUint32(nil, uint32(len(ctext))), ctext)
	put("secret_record", secret, "meta/secret under datakey")
	header := cat(id, commit, params, u64(created))
	put("header", header, "meta/header: keyring_id, commitment, the admin parameters as policy, created")

	// Audit: events 1 (keyed) and 2 (unkeyed), reads 1 (keyed).
	rec := func(seq int64, prev []byte, keyed bool, mac []byte, body string) []byte {
		k := byte(0)
		if keyed {
			k = 1
		}
		return cat([]byte{1}, u64(seq), prev, []byte{k}, mac, []byte(body))
	}
	zero := make([]byte, 32)
	b1 := vectorInputs["event_1_body"]
	// Records 1 of each stream belong to the epoch before a rekey: the key
	// history below says so, and they are signed with audit_key_old.
	akOld := vin(t, "audit_key_old")
	m1 := specHMAC(akOld, []byte("sealbox/v1/audit"), u64(1), zero, []byte{1}, []byte(b1))
	put("event_1", rec(1, zero, true, m1, b1), "audit/u64(1): keyed under audit_key_old (its epoch, per the key history)")
	b2 := vectorInputs["event_2_body"]
	h2 := sha256.Sum256(cat([]byte("sealbox/v1/audit-unkeyed"), u64(2), m1, []byte{0}, []byte(b2)))
	put("event_2", rec(2, m1, false, h2[:], b2), "audit/u64(2): unkeyed (SHA-256)")
	br := vectorInputs["read_1_body"]
	mr := specHMAC(akOld, []byte("sealbox/v2/reads"), u64(1), zero, []byte{1}, []byte(br))
	put("read_1", rec(1, zero, true, mr, br), "audit-reads/u64(1): keyed under audit_key_old (its epoch)")

	// The key history: one earlier epoch.
	hk := specHKDF(ak, nil, "sealbox/v1/audit-keys")
	entry := cat(u64(P["history_events_last"]), u64(P["history_reads_last"]), vin(t, "audit_key_old"))
	hist := cat(vin(t, "key_history_nonce"), specGCM(hk, vin(t, "key_history_nonce"), entry, []byte("sealbox/v1/audit-keys")))
	put("key_history", hist, "meta/audit-keys: nonce || GCM(HKDF(AK, empty, sealbox/v1/audit-keys), ...) of one entry (history_events_last, history_reads_last, audit_key_old)")

	// The manifest and the state root over: slots alice, bob (pending),
	// carol (upgraded), dave; clients api, db, web; the secret, the header,
	// the key history and the audit records above.
	entries := map[string][]byte{}
	for _, r := range []struct{ key, rec string }{
		{"Salice", "slot_alice"}, {"Sbob", "slot_bob_pending"}, {"Scarol", "slot_carol_upgraded"}, {"Sdave", "slot_dave"},
		{"Capi", "client_api"}, {"Cdb", "client_db"}, {"Cweb", "client_web"},
	} {
		raw, _ := hex.DecodeString(out[r.rec])
		h := sha256.Sum256(raw)
		entries[r.key] = h[:]
	}
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mh := sha256.New()
	mh.Write([]byte("sealbox/v2/records"))
	for _, k := range keys {
		mh.Write(binary.BigEndian.AppendUint16(nil, uint16(len(k))))
		mh.Write([]byte(k))
		mh.Write(entries[k])
	}
	put("records_hash", mh.Sum(nil), "SHA256(sealbox/v2/records || each manifest entry u16(len(key)) || key || SHA256(record), in key order: Capi, Cdb, Cweb, Salice, Sbob, Scarol, Sdave)")
	hh, sh, kh := sha256.Sum256(header), sha256.Sum256(secret), sha256.Sum256(hist)
	rh, _ := hex.DecodeString(out["records_hash"])
	body := cat([]byte{1}, u64(P["root_generation"]), hh[:], sh[:], rh, kh[:],
		u64(1), m1, u64(0), zero, // events: keyed record 1, never pruned
		u64(1), mr, u64(0), zero) // reads: keyed record 1, never pruned
	rootMAC := specHMAC(rk, []byte("sealbox/v2/root"), id, body)
	put("root", cat(body, rootMAC), "meta/root: generation root_generation over the header, secret, manifest, key history, and both audit streams (keyed record 1 each, no anchor)")
	specUnattended(t, put, id, dk, ek, created)
	return out, notes
}

var b64u = base64.RawURLEncoding

// specP521 returns the public point of scalar d (66 bytes) as x, y.
func specP521(t *testing.T, d []byte) (x, y []byte) {
	k, err := ecdh.P521().NewPrivateKey(d)
	if err != nil {
		t.Fatalf("P-521 scalar: %v", err)
	}
	u := k.PublicKey().Bytes() // 0x04 || x || y
	return u[1:67], u[67:]
}

// specTangJWE is FORMAT.md's tang binding of plaintext to the server whose
// exchange key is S = d·G, with client scalar c and iv.
func specTangJWE(t *testing.T, serverD, c, iv []byte, url string, plaintext []byte) (jwe []byte, kid string, z []byte) {
	sx, sy := specP521(t, serverD)
	cx, cy := specP521(t, c)
	thp := sha256.Sum256([]byte(`{"crv":"P-521","kty":"EC","x":"` + b64u.EncodeToString(sx) + `","y":"` + b64u.EncodeToString(sy) + `"}`))
	kid = b64u.EncodeToString(thp[:])
	sJWK := `{"alg":"ECMR","crv":"P-521","key_ops":["deriveKey"],"kty":"EC","x":"` + b64u.EncodeToString(sx) + `","y":"` + b64u.EncodeToString(sy) + `"}`
	hdr := `{"alg":"ECDH-ES","enc":"A256GCM","kid":"` + kid + `","epk":{"kty":"EC","crv":"P-521","x":"` + b64u.EncodeToString(cx) +
		`","y":"` + b64u.EncodeToString(cy) + `"},"clevis":{"pin":"tang","tang":{"url":"` + url + `","adv":{"keys":[` + sJWK + `]}}}}`
	ck, _ := ecdh.P521().NewPrivateKey(c)
	sk, _ := ecdh.P521().NewPrivateKey(serverD)
	z, _ = ck.ECDH(sk.PublicKey()) // x(c·S), 66 bytes
	kdf := sha256.Sum256(cat([]byte{0, 0, 0, 1}, z, []byte{0, 0, 0, 7}, []byte("A256GCM"), []byte{0, 0, 0, 0}, []byte{0, 0, 0, 0}, []byte{0, 0, 1, 0}))
	h64 := b64u.EncodeToString([]byte(hdr))
	sealed := specGCM(kdf[:], iv, plaintext, []byte(h64))
	n := len(plaintext)
	jwe = []byte(h64 + ".." + b64u.EncodeToString(iv) + "." + b64u.EncodeToString(sealed[:n]) + "." + b64u.EncodeToString(sealed[n:]))
	return jwe, kid, z
}

// specUnattendedSlot is a version-3 slot record of kind 4 to 6.
func specUnattendedSlot(kind byte, created int64, binding, nonce, wrapped, escNonce, escrow []byte) []byte {
	body := cat(binary.BigEndian.AppendUint16(nil, uint16(len(binding))), binding, nonce, wrapped, escNonce, escrow, make([]byte, 12+48))
	return cat([]byte{3, kind}, u64(created), u64(0), []byte{0}, binary.BigEndian.AppendUint16(nil, uint16(len(body))), body)
}

// specGFMul multiplies in GF(2^8) with the AES polynomial.
func specGFMul(a, b byte) byte {
	var p byte
	for range 8 {
		if b&1 == 1 {
			p ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= 0x1b
		}
		b >>= 1
	}
	return p
}

func specUnattended(t *testing.T, put func(string, []byte, string), id, dk, ek []byte, created int64) {
	// A tang slot.
	jwe, kid, z := specTangJWE(t, vin(t, "tang_server_d"), vin(t, "tang_c"), vin(t, "tang_iv"), vectorInputs["tang_url"], vin(t, "tang_kek"))
	put("tang_kid", []byte(kid), "the thumbprint (RFC 7638, S256, base64url; here as hex of its ASCII) of the server's exchange key S = tang_server_d·G")
	put("tang_z", z, "Z = x(tang_c·S): what the McCallum-Relyea exchange recovers (x(Y − e·S) with Y = d·(C + e·G))")
	put("tang_binding", jwe, "the tang binding: a compact JWE (ASCII) of tang_kek for tang_url, epk = tang_c·G, iv tang_iv")
	wrap := specGCM(vin(t, "tang_kek"), vin(t, "tang_nonce"), cat(dk, vin(t, "tang_hand")), specPlace("sealbox/v2/slot", id, 4, "tang-1"))
	esc := specGCM(ek, vin(t, "tang_escrow_nce"), vin(t, "tang_hand"), specPlace("sealbox/v2/escrow", id, 4, "tang-1"))
	put("slot_tang", specUnattendedSlot(4, created, jwe, vin(t, "tang_nonce"), wrap, vin(t, "tang_escrow_nce"), esc), "slots/tang-1: a kind-4 slot whose KEK is tang_kek")

	// A tpm2 slot: the binding is an input; its policy digest is
	// computable from the PCR value it was sealed to (zero).
	tb := vin(t, "tpm2_binding")
	sel := []byte{0, 0, 0, 1, 0x00, 0x0b, 3, 0x80, 0, 0} // TPML_PCR_SELECTION: one sha256 entry, PCR 7
	pcrs := sha256.Sum256(make([]byte, 32))
	digest := sha256.Sum256(cat(make([]byte, 32), []byte{0, 0, 0x01, 0x7f}, sel, pcrs[:]))
	put("tpm2_policy_digest", digest[:], "PolicyPCR digest of PCR 7 (sha256) = 32 zero bytes: SHA256(0^32 || u32(0x17F) || selection || SHA256(PCR 7))")
	wrap = specGCM(vin(t, "tpm2_kek"), vin(t, "tpm2_nonce"), cat(dk, vin(t, "tpm2_hand")), specPlace("sealbox/v2/slot", id, 5, "tpm2-1"))
	esc = specGCM(ek, vin(t, "tpm2_escrow_nce"), vin(t, "tpm2_hand"), specPlace("sealbox/v2/escrow", id, 5, "tpm2-1"))
	put("slot_tpm2", specUnattendedSlot(5, created, tb, vin(t, "tpm2_nonce"), wrap, vin(t, "tpm2_escrow_nce"), esc), "slots/tpm2-1: a kind-5 slot whose KEK is tpm2_kek")

	// A threshold 2 of 3 Tang servers (the same server here, three
	// bindings): shares of site_kek with coefficients site_coef.
	kek, coef := vin(t, "site_kek"), vin(t, "site_coef")
	th := []byte{1, 2, 3}
	for i := 1; i <= 3; i++ {
		share := make([]byte, 32)
		for j := range share {
			share[j] = kek[j] ^ specGFMul(coef[j], byte(i))
		}
		put(fmt.Sprintf("site_share_%d", i), share, fmt.Sprintf("share x=%d: site_kek[j] ^ site_coef[j]•%d in GF(2^8)", i, i))
		m, _, _ := specTangJWE(t, vin(t, "tang_server_d"), vin(t, fmt.Sprintf("site_c%d", i)), vin(t, fmt.Sprintf("site_iv%d", i)), vectorInputs["tang_url"], share)
		th = cat(th, []byte{4}, binary.BigEndian.AppendUint16(nil, uint16(len(m))), m)
	}
	put("threshold_binding", th, "a threshold binding: 2 of 3 tang members, member i the tang binding of share i (client scalar site_ci, iv site_ivi)")
	wrap = specGCM(kek, vin(t, "site_nonce"), cat(dk, vin(t, "site_hand")), specPlace("sealbox/v2/slot", id, 6, "site"))
	esc = specGCM(ek, vin(t, "site_escrow_nce"), vin(t, "site_hand"), specPlace("sealbox/v2/escrow", id, 6, "site"))
	put("slot_threshold", specUnattendedSlot(6, created, th, vin(t, "site_nonce"), wrap, vin(t, "site_escrow_nce"), esc), "slots/site: a kind-6 slot whose KEK is site_kek")

	// The identity.
	idk := specHKDF(dk, id, "sealbox/v2/identity-key")
	put("identity_record", cat(vin(t, "identity_nonce"), specGCM(idk, vin(t, "identity_nonce"), vin(t, "identity"), cat([]byte("sealbox/v2/identity"), id))),
		"meta/identity: identity_nonce || GCM(HKDF(datakey, keyring_id, sealbox/v2/identity-key), identity_nonce, identity, sealbox/v2/identity || keyring_id)")
	pin := sha256.Sum256(cat([]byte("sealbox/v2/identity-pin"), id, vin(t, "identity")))
	put("identity_pin", pin[:], "the pin (unattended_identity, as 64 hex digits): SHA256(sealbox/v2/identity-pin || keyring_id || identity)")
}

func TestVectors(t *testing.T) {
	out, notes := specCompute(t)
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		f := vectorFile{Comment: "sealbox keyring format 2 test vectors; see keyring/FORMAT.md", Inputs: vectorInputs, Params: vectorParams, Outputs: out, Notes: notes}
		b, _ := json.MarshalIndent(f, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	for k, v := range vectorInputs {
		if f.Inputs[k] != v {
			t.Errorf("input %s differs from the file", k)
		}
	}
	for k, v := range out {
		if f.Outputs[k] != v {
			t.Errorf("%s: the spec computation gives %s, the file says %s", k, v, f.Outputs[k])
		}
	}
	if len(f.Outputs) != len(out) {
		t.Errorf("the file has %d outputs, the computation %d", len(f.Outputs), len(out))
	}
	checkCode(t, &f)
}

func vout(t *testing.T, f *vectorFile, k string) []byte {
	t.Helper()
	b, err := hex.DecodeString(f.Outputs[k])
	if err != nil || len(b) == 0 {
		t.Fatalf("output %q: %v", k, err)
	}
	return b
}

// checkCode runs sealbox's own code on the inputs and checks it produces and
// opens the same bytes.
func checkCode(t *testing.T, f *vectorFile) {
	mo := memlock.Options{AllowUnlocked: true}
	var id [keyring.IDSize]byte
	copy(id[:], vin(t, "keyring_id"))
	k, err := newKey(bytes.NewReader(vin(t, "datakey")), id, mo)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	k2, err := newKey(bytes.NewReader(vin(t, "datakey_new")), id, mo)
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Destroy()
	if c := k.Commitment(); !bytes.Equal(c[:], vout(t, f, "commitment")) {
		t.Error("Commitment differs")
	}
	if !bytes.Equal(k.RootKey(), vout(t, f, "root_key")) {
		t.Error("RootKey differs")
	}
	lk, _ := k.LogKeys(mo)
	defer lk.Destroy()
	if !bytes.Equal(lk.Bytes()[:32], vout(t, f, "audit_key")) || !bytes.Equal(lk.Bytes()[32:], vout(t, f, "root_key")) {
		t.Error("LogKeys differ")
	}
	P := vectorParams
	admin := keyring.Params{Time: uint32(P["admin_t"]), MemoryKiB: uint32(P["admin_m_kib"]), Threads: uint8(P["admin_p"])}
	codeP := keyring.Params{Time: uint32(P["code_t"]), MemoryKiB: uint32(P["code_m_kib"]), Threads: uint8(P["code_p"])}
	created := P["created"]
	h := &keyring.Header{ID: id, Commitment: k.Commitment(), Policy: admin, Created: created}
	if !bytes.Equal(h.Marshal(), vout(t, f, "header")) {
		t.Error("header differs")
	}

	seal := func(name string, kind keyring.SlotKind, secret []byte, p keyring.Params, expires int64, prefix, want string) {
		t.Helper()
		rng := bytes.NewReader(cat(vin(t, prefix+"_salt"), vin(t, prefix+"_nonce"), vin(t, prefix+"_hand"), vin(t, prefix+"_escrow_nce")))
		s, err := k.sealSlot(rng, name, kind, secret, p, created, expires)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s.Marshal(), vout(t, f, want)) {
			t.Errorf("sealSlot %s differs:\n%x\n%x", name, s.Marshal(), vout(t, f, want))
		}
	}
	seal("alice", keyring.KindAdmin, []byte(vectorInputs["alice_password"]), admin, 0, "alice", "slot_alice")
	norm, ok := NormalizeCode([]byte(vectorInputs["dave_code"]))
	if !ok {
		t.Fatal("the vector code does not normalize")
	}
	seal("dave", keyring.KindInvite, norm, codeP, P["dave_expires"], "dave", "slot_dave")
	seal("bob", keyring.KindAdmin, []byte(vectorInputs["bob_password"]), admin, 0, "bob", "slot_bob")

	open := func(rec string, name string, secret []byte, hd *keyring.Header, want *Key, folded bool) {
		t.Helper()
		s, err := keyring.ParseSlot(name, vout(t, f, rec))
		if err != nil {
			t.Fatal(err)
		}
		got, err := OpenSlot(hd, s, secret, mo)
		if err != nil {
			t.Fatalf("OpenSlot(%s): %v", rec, err)
		}
		defer got.Destroy()
		if !bytes.Equal(got.dataKey(), want.dataKey()) || got.Folded != folded {
			t.Errorf("OpenSlot(%s): wrong key, or folded %v", rec, got.Folded)
		}
	}
	open("slot_alice", "alice", []byte(vectorInputs["alice_password"]), h, k, false)
	open("slot_dave", "dave", norm, h, k, false)
	open("slot_carol_upgraded", "carol", []byte(vectorInputs["carol_password"]), h, k, false)

	// The hand-over of a rekey reproduces bob's pending slot, which opens
	// to the new key under the new commitment.
	bob, _ := keyring.ParseSlot("bob", vout(t, f, "slot_bob"))
	handed, err := k.handOver(bytes.NewReader(cat(vin(t, "bob_escrow_nce2"), vin(t, "bob_pending_nce"))), bob, k2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(handed.Marshal(), vout(t, f, "slot_bob_pending")) {
		t.Errorf("handOver differs:\n%x\n%x", handed.Marshal(), vout(t, f, "slot_bob_pending"))
	}
	h2 := *h
	h2.Commitment = k2.Commitment()
	open("slot_bob_pending", "bob", []byte(vectorInputs["bob_password"]), &h2, k2, true)

	// Format-1 records: they parse, open, and their MACs verify.
	for _, c := range []struct{ rec, name, pw string }{{"legacy_slot_carol", "carol", "carol_password"}, {"legacy_slot_erin_v1", "erin", "erin_password"}} {
		raw := vout(t, f, c.rec)
		s, err := keyring.ParseLegacySlot(c.name, raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := OpenSlot(h, s, []byte(vectorInputs[c.pw]), mo)
		if err != nil {
			t.Fatalf("OpenSlot(%s): %v", c.rec, err)
		}
		got.Destroy()
		var rk1 [32]byte
		hkdfInto(rk1[:], k.dataKey(), id[:], labelLegacyReg)
		if m := legacyMAC(rk1[:], id, labelLegacySMAC, c.name, keyring.LegacyBody(raw)); !bytes.Equal(m[:], raw[len(raw)-32:]) {
			t.Errorf("%s: record MAC differs", c.rec)
		}
		up, err := k.UpgradeSlot(s)
		if err != nil {
			t.Fatal(err)
		}
		if c.name == "carol" {
			var hand [32]byte
			if err := k.openEscrow(up, hand[:]); err != nil || !bytes.Equal(hand[:], vout(t, f, "carol_hand")) {
				t.Errorf("the upgraded slot's escrow: %v", err)
			}
		}
	}
	lc, err := keyring.ParseLegacyClient("web", vout(t, f, "legacy_client_web"))
	if err != nil || lc.UID != 33 || !lc.HasGID {
		t.Fatalf("legacy client: %v %+v", err, lc)
	}

	// Clients and the secret.
	for _, c := range []string{"web", "api", "db"} {
		cl, err := keyring.ParseClient(c, vout(t, f, "client_"+c))
		if err != nil || !bytes.Equal(cl.Marshal(), vout(t, f, "client_"+c)) {
			t.Errorf("client %s: %v", c, err)
		}
	}
	sec, err := k.encryptSecret(bytes.NewReader(vin(t, "secret_nonce")), vin(t, "secret"), uint64(P["secret_version"]))
	if err != nil || !bytes.Equal(sec.Marshal(), vout(t, f, "secret_record")) {
		t.Errorf("encryptSecret differs: %v", err)
	}

	checkUnattendedCode(t, f, k, h)

	// A keyring holding exactly these records verifies under the root, and
	// its audit log under AK.
	kr, err := keyring.Create(filepath.Join(t.TempDir(), "v.db"), func(tx *keyring.Tx) error {
		if err := tx.PutHeader(h); err != nil {
			return err
		}
		ps, _ := keyring.ParseSecret(vout(t, f, "secret_record"))
		if err := tx.PutSecret(ps); err != nil {
			return err
		}
		for _, s := range []struct{ name, rec string }{{"alice", "slot_alice"}, {"bob", "slot_bob_pending"}, {"carol", "slot_carol_upgraded"}, {"dave", "slot_dave"}} {
			sl, err := keyring.ParseSlot(s.name, vout(t, f, s.rec))
			if err != nil {
				return err
			}
			if err := tx.PutSlot(sl); err != nil {
				return err
			}
		}
		for _, c := range []string{"web", "api", "db"} {
			cl, _ := keyring.ParseClient(c, vout(t, f, "client_"+c))
			if err := tx.PutClient(cl); err != nil {
				return err
			}
		}
		if err := rebuildManifest(tx); err != nil {
			return err
		}
		if got := recordsDigest(tx); !bytes.Equal(got[:], vout(t, f, "records_hash")) {
			t.Errorf("records hash differs: %x", got)
		}
		tx.PutAudit(keyring.Events, 1, vout(t, f, "event_1"))
		tx.PutAudit(keyring.Events, 2, vout(t, f, "event_2"))
		tx.PutAudit(keyring.Reads, 1, vout(t, f, "read_1"))
		tx.PutAuditMeta(keyring.AuditKeys, vout(t, f, "key_history"))
		root, err := keyring.ParseRoot(vout(t, f, "root"))
		if err != nil {
			return err
		}
		if mac := RootMAC(k.RootKey(), id, root); mac != root.MAC {
			t.Error("RootMAC differs")
		}
		return tx.PutRoot(root)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	kr.View(func(tx *keyring.Tx) error {
		rep, err := k.VerifyState(tx, nil)
		if err != nil || !rep.OK() {
			t.Errorf("the vector keyring does not verify: %v %v", err, rep.Err())
		}
		if _, err := audit.Verify(tx, lk.Bytes()[:32], rep.Root); err != nil {
			t.Errorf("the vector audit log does not verify: %v", err)
		}
		return nil
	})
}

// checkUnattendedCode checks sealbox's own code against the unattended
// vectors: it parses and opens the slots, recombines the shares, and makes
// and reads the identity record.
func checkUnattendedCode(t *testing.T, f *vectorFile, k *Key, h *keyring.Header) {
	mo := memlock.Options{AllowUnlocked: true}
	for _, c := range []struct {
		rec, name, kek string
		kind           keyring.SlotKind
	}{{"slot_tang", "tang-1", "tang_kek", keyring.KindTang}, {"slot_tpm2", "tpm2-1", "tpm2_kek", keyring.KindTPM2}, {"slot_threshold", "site", "site_kek", keyring.KindThreshold}} {
		s, err := keyring.ParseSlot(c.name, vout(t, f, c.rec))
		if err != nil || s.Kind != c.kind || !bytes.Equal(s.Marshal(), vout(t, f, c.rec)) {
			t.Fatalf("%s: %v", c.rec, err)
		}
		got, err := OpenSlotKEK(h, s, vin(t, c.kek), mo)
		if err != nil || !bytes.Equal(got.dataKey(), k.dataKey()) {
			t.Fatalf("OpenSlotKEK(%s): %v", c.rec, err)
		}
		got.Destroy()
		rng := bytes.NewReader(cat(vin(t, strings.TrimSuffix(c.kek, "_kek")+"_nonce"), vin(t, strings.TrimSuffix(c.kek, "_kek")+"_hand"), vin(t, strings.TrimSuffix(c.kek, "_kek")+"_escrow_nce")))
		made, err := k.sealSlotKEK(rng, c.name, c.kind, s.Binding, vin(t, c.kek), vectorParams["created"])
		if err != nil || !bytes.Equal(made.Marshal(), vout(t, f, c.rec)) {
			t.Errorf("sealSlotKEK(%s) differs: %v", c.rec, err)
		}
	}
	b, err := tang.Parse(vout(t, f, "tang_binding"))
	if err != nil || b.URL != vectorInputs["tang_url"] || b.Kid != string(vout(t, f, "tang_kid")) || b.Len() != 32 {
		t.Fatalf("tang.Parse: %v %+v", err, b)
	}
	// The server's side of the exchange gives the same Z: x(d·C) = x(c·S).
	sk, _ := ecdh.P521().NewPrivateKey(vin(t, "tang_server_d"))
	ck, _ := ecdh.P521().NewPrivateKey(vin(t, "tang_c"))
	if z, _ := sk.ECDH(ck.PublicKey()); !bytes.Equal(z, vout(t, f, "tang_z")) {
		t.Error("x(d·C) differs from x(c·S)")
	}
	tb, err := tpm2.Parse(vin(t, "tpm2_binding"))
	if err != nil || !bytes.Equal(tb.PolicyDigest[:], vout(t, f, "tpm2_policy_digest")) || !slicesEqual(tb.PCRs, []int{7}) {
		t.Fatalf("tpm2.Parse: %v", err)
	}
	th, err := unattended.ParseThreshold(vout(t, f, "threshold_binding"))
	if err != nil || th.T != 2 || len(th.Members) != 3 {
		t.Fatalf("ParseThreshold: %v", err)
	}
	got := make([]byte, 32)
	if err := shamir.Combine(got, []byte{1, 3}, [][]byte{vout(t, f, "site_share_1"), vout(t, f, "site_share_3")}); err != nil || !bytes.Equal(got, vin(t, "site_kek")) {
		t.Errorf("shares 1 and 3 do not recombine: %v", err)
	}
	rec, err := k.sealIdentity(bytes.NewReader(vin(t, "identity_nonce")), vin(t, "identity"))
	if err != nil || !bytes.Equal(rec, vout(t, f, "identity_record")) {
		t.Errorf("sealIdentity differs: %v", err)
	}
	if pin, err := k.IdentityPin(vout(t, f, "identity_record")); err != nil || pin != hex.EncodeToString(vout(t, f, "identity_pin")) {
		t.Errorf("IdentityPin differs: %v", err)
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
