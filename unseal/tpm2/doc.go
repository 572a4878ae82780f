// Package tpm2 seals a short secret (a DataKey, 1 to 64 bytes) to a TPM 2.0
// and its PCRs, so that sealbox can unseal without a password on a host
// whose boot chain has not changed. It is for the daemon's unattended slots;
// it is not a general TPM library, and it knows nothing about keyrings.
//
// Most callers want Seal (plaintext + PCR list → binding bytes, stored in a
// slot) and Unseal (binding → plaintext in a caller's buffer, which should
// be locked memory). Drifted tells, without unsealing, whether the PCRs have
// moved since the binding was made, so that status can say "reseal needed"
// before the next boot fails.
//
// # How
//
// The daemon stays cgo-free and takes no TPM module: the package drives
// tpm2-tools (tpm2_createprimary, tpm2_create, tpm2_load, tpm2_unseal,
// tpm2_pcrread, tpm2_flushcontext) as subprocesses, as clevis does. The
// TCTI is given to each child alone, as TPM2TOOLS_TCTI in its environment:
// "device:/dev/tpmrm0" (the default) in production, "swtpm:host=…,port=…"
// in tests. The secret is never in argv or the environment: Seal writes it
// to tpm2_create's stdin (-i -) through a pipe, Unseal reads tpm2_unseal's
// stdout through a pipe straight into the caller's buffer. Temporary files
// (contexts, the public and private blobs, PCR values, the policy digest)
// live in a private 0700 directory removed afterwards; none holds the
// secret. Every command runs in its own process group under the caller's
// context, and the whole group is killed when the context ends.
//
// The parent is an ECC primary key in the owner hierarchy made from
// tpm2-tools' standard template (tpm2_createprimary -C o -g sha256 -G ecc),
// recreated at every use: the same template on the same TPM gives the same
// key, so nothing is persisted in the TPM. The sealed object is a keyedhash
// object with attributes fixedtpm|fixedparent|noda and an authPolicy of
// PolicyPCR over the chosen sha256 PCRs; userWithAuth is clear, so the
// policy is the only way to unseal it. Transient objects and sessions are
// flushed before and after each use, because a TPM without a resource
// manager (swtpm, /dev/tpm0) keeps them until flushed; for the same reason
// the package runs one operation at a time per TCTI within a process.
//
// # Binding format, version 1
//
// All integers big-endian:
//
//	ver           u8     1
//	alg           u16    0x000B (the sha256 PCR bank)
//	pcr_mask      u32    bit i = PCR i; at least one bit, none at i ≥ 24
//	policy_digest [32]   PolicyPCR digest of those PCRs when sealed
//	pub_len       u16    ≤ 1024
//	pub           [pub_len]   TPM2B_PUBLIC, as tpm2_create -u writes it
//	priv_len      u16    ≤ 1024
//	priv          [priv_len]  TPM2B_PRIVATE, as tpm2_create -r writes it
//
// Nothing may follow priv. Parse also checks the inside of pub: a
// TPM2B_PUBLIC whose size matches, of type keyedhash with nameAlg sha256,
// fixedTPM and fixedParent set, userWithAuth clear, a null scheme, a
// 32-byte unique field, and an authPolicy equal to policy_digest; and that
// priv's TPM2B size matches its length.
//
// policy_digest is H(0³² ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖
// H(PCR values in ascending order)), with H = SHA-256, TPM_CC_PolicyPCR =
// 0x0000017F as u32, and the selection one sha256 entry with a 3-byte
// bitmap (TPM 2.0 Part 3, PolicyPCR). Drifted recomputes it from the
// current PCR values.
//
// # Errors
//
// ErrPolicy: the PCRs are not those sealed to (TPM_RC_POLICY_FAIL); this
// lasts until the secret is sealed again. ErrUnavailable: no TPM, tools
// missing, the TCTI cannot connect, the TPM is busy, or the context ended;
// trying again later may work. ErrBinding: the TPM refuses the blobs
// themselves (TPM_RC_INTEGRITY: sealed on another TPM, the owner hierarchy
// was cleared, or the blobs were altered); permanent. ErrFormat: bytes that
// Parse refuses. ErrArgument: a bad plaintext length, PCR list or buffer.
// Messages include a few hundred bytes of tpm2-tools' stderr and never the
// secret.
package tpm2
