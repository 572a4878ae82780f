package tpm2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Format constants.
const (
	version      = 1
	algSHA256    = 0x000B // TPM_ALG_SHA256
	algKeyedHash = 0x0008 // TPM_ALG_KEYEDHASH
	algNull      = 0x0010 // TPM_ALG_NULL
	ccPolicyPCR  = 0x0000017F
	maxPCR       = 24
	maxBlob      = 1024
	headerLen    = 1 + 2 + 4 + 32

	// TPMA_OBJECT bits.
	attrFixedTPM     = 0x00000002
	attrFixedParent  = 0x00000010
	attrUserWithAuth = 0x00000040
)

// Binding is a parsed binding: what Seal returns and Unseal takes.
type Binding struct {
	// Bank is the PCR bank, "sha256" (the only one version 1 knows).
	Bank string
	// PCRs are the PCR indices sealed to, ascending, each below 24.
	PCRs []int
	// PolicyDigest is the PolicyPCR digest of those PCRs' values at Seal.
	PolicyDigest [32]byte
	// Public and Private are the TPM2B_PUBLIC and TPM2B_PRIVATE blobs.
	Public, Private []byte
}

// Parse decodes a binding (see the package doc for the format). It refuses
// any other version or bank, an empty mask or one naming PCR 24 or above,
// lengths that do not add up, blobs over 1024 bytes, and a public area
// that is not a policy-only sealed object under policy_digest. The result
// does not alias binding.
func Parse(binding []byte) (*Binding, error) {
	if len(binding) < headerLen+2 {
		return nil, formatErr("%d bytes is too short", len(binding))
	}
	if binding[0] != version {
		return nil, formatErr("version %d, want %d", binding[0], version)
	}
	if alg := binary.BigEndian.Uint16(binding[1:]); alg != algSHA256 {
		return nil, formatErr("PCR bank 0x%04x, want 0x%04x (sha256)", alg, algSHA256)
	}
	mask := binary.BigEndian.Uint32(binding[3:])
	pcrs, err := maskPCRs(mask)
	if err != nil {
		return nil, err
	}
	b := &Binding{Bank: "sha256", PCRs: pcrs}
	copy(b.PolicyDigest[:], binding[7:headerLen])
	rest := binding[headerLen:]
	if b.Public, rest, err = blob(rest, "pub"); err != nil {
		return nil, err
	}
	if b.Private, rest, err = blob(rest, "priv"); err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, formatErr("%d bytes after priv", len(rest))
	}
	if err := checkPublic(b.Public, b.PolicyDigest); err != nil {
		return nil, err
	}
	if err := checkTPM2B(b.Private, "priv"); err != nil {
		return nil, err
	}
	return b, nil
}

// Marshal encodes b. Parse(b.Marshal()) gives b back; Marshal of a parsed
// binding gives the parsed bytes back. It panics on a Binding that Parse
// could not have returned (a bug in the caller).
func (b *Binding) Marshal() []byte {
	mask, err := pcrMask(b.PCRs)
	if err != nil || b.Bank != "sha256" || len(b.Public) > maxBlob || len(b.Private) > maxBlob {
		panic("tpm2: Marshal of an invalid Binding")
	}
	out := make([]byte, 0, headerLen+4+len(b.Public)+len(b.Private))
	out = append(out, version)
	out = binary.BigEndian.AppendUint16(out, algSHA256)
	out = binary.BigEndian.AppendUint32(out, mask)
	out = append(out, b.PolicyDigest[:]...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.Public)))
	out = append(out, b.Public...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.Private)))
	out = append(out, b.Private...)
	return out
}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("tpm2: binding: %s: %w", fmt.Sprintf(format, args...), ErrFormat)
}

// blob splits a u16-length-prefixed field off p and copies it.
func blob(p []byte, name string) (field, rest []byte, err error) {
	if len(p) < 2 {
		return nil, nil, formatErr("truncated before %s length", name)
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > maxBlob {
		return nil, nil, formatErr("%s is %d bytes, at most %d", name, n, maxBlob)
	}
	if len(p)-2 < n {
		return nil, nil, formatErr("%s is %d bytes, only %d left", name, n, len(p)-2)
	}
	return bytes.Clone(p[2 : 2+n]), p[2+n:], nil
}

// checkTPM2B checks that p is a TPM2B whose size field covers the rest.
func checkTPM2B(p []byte, name string) error {
	if len(p) < 3 || int(binary.BigEndian.Uint16(p)) != len(p)-2 {
		return formatErr("%s is not a TPM2B of its length", name)
	}
	return nil
}

// checkPublic checks that pub is the TPM2B_PUBLIC of a sealed data object
// that only the policy digest can unseal.
func checkPublic(pub []byte, digest [32]byte) error {
	if err := checkTPM2B(pub, "pub"); err != nil {
		return err
	}
	p := pub[2:]
	// type, nameAlg, objectAttributes, authPolicy (TPM2B 32), scheme
	// (null: no details), unique (TPM2B 32).
	const want = 2 + 2 + 4 + 2 + 32 + 2 + 2 + 32
	if len(p) != want {
		return formatErr("pub area is %d bytes, want %d for a sealed object", len(p), want)
	}
	if t := binary.BigEndian.Uint16(p[0:]); t != algKeyedHash {
		return formatErr("pub type 0x%04x, want keyedhash", t)
	}
	if a := binary.BigEndian.Uint16(p[2:]); a != algSHA256 {
		return formatErr("pub nameAlg 0x%04x, want sha256", a)
	}
	attrs := binary.BigEndian.Uint32(p[4:])
	if attrs&(attrFixedTPM|attrFixedParent) != attrFixedTPM|attrFixedParent || attrs&attrUserWithAuth != 0 {
		return formatErr("pub attributes 0x%08x: want fixedTPM and fixedParent, and not userWithAuth", attrs)
	}
	if n := binary.BigEndian.Uint16(p[8:]); n != 32 || !bytes.Equal(p[10:42], digest[:]) {
		return formatErr("pub authPolicy is not policy_digest")
	}
	if s := binary.BigEndian.Uint16(p[42:]); s != algNull {
		return formatErr("pub scheme 0x%04x, want null", s)
	}
	if n := binary.BigEndian.Uint16(p[44:]); n != 32 {
		return formatErr("pub unique is %d bytes, want 32", n)
	}
	return nil
}

// maskPCRs lists the PCRs of a pcr_mask.
func maskPCRs(mask uint32) ([]int, error) {
	if mask == 0 || mask>>maxPCR != 0 {
		return nil, formatErr("PCR mask 0x%08x: want at least one of PCRs 0-23 and nothing above", mask)
	}
	var pcrs []int
	for i := range maxPCR {
		if mask&(1<<i) != 0 {
			pcrs = append(pcrs, i)
		}
	}
	return pcrs, nil
}

// pcrMask is the mask of a PCR list; it refuses an empty list, an index out
// of 0-23 and a repeated index.
func pcrMask(pcrs []int) (uint32, error) {
	var mask uint32
	for _, i := range pcrs {
		if i < 0 || i >= maxPCR {
			return 0, fmt.Errorf("tpm2: PCR %d is not in 0-23: %w", i, ErrArgument)
		}
		if mask&(1<<i) != 0 {
			return 0, fmt.Errorf("tpm2: PCR %d listed twice: %w", i, ErrArgument)
		}
		mask |= 1 << i
	}
	if mask == 0 {
		return 0, fmt.Errorf("tpm2: no PCR given: %w", ErrArgument)
	}
	return mask, nil
}

// selection is the tpm2-tools PCR selection for a mask: "sha256:0,7".
func selection(mask uint32) string {
	pcrs, _ := maskPCRs(mask)
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = strconv.Itoa(p)
	}
	return "sha256:" + strings.Join(s, ",")
}

// policyPCR is the PolicyPCR digest, from an empty policy, of the sha256
// PCRs in mask whose values are values (32 bytes each, ascending PCR order).
func policyPCR(mask uint32, values []byte) [32]byte {
	pcrDigest := sha256.Sum256(values)
	h := sha256.New()
	h.Write(make([]byte, 32))
	h.Write(binary.BigEndian.AppendUint32(nil, ccPolicyPCR))
	// TPML_PCR_SELECTION: count, then one TPMS_PCR_SELECTION: hash,
	// sizeofSelect, pcrSelect (bit i%8 of byte i/8 = PCR i).
	h.Write(binary.BigEndian.AppendUint32(nil, 1))
	h.Write(binary.BigEndian.AppendUint16(nil, algSHA256))
	h.Write([]byte{3, byte(mask), byte(mask >> 8), byte(mask >> 16)})
	h.Write(pcrDigest[:])
	var d [32]byte
	h.Sum(d[:0])
	return d
}
