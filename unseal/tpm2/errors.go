package tpm2

import "github.com/sealbox/sealbox/internal/errclass"

// Errors callers test with errors.Is. See the package doc.
var (
	// ErrPolicy: the PCRs are not those the secret was sealed to. It lasts
	// until the secret is sealed again.
	ErrPolicy = errclass.New(errclass.Refused, "the PCRs differ from those the secret was sealed to (TPM_RC_POLICY_FAIL); seal it again")
	// ErrUnavailable: no TPM, no tpm2-tools, the TCTI cannot connect, the
	// TPM is busy, or the context ended. Trying again later may work.
	ErrUnavailable = errclass.New(errclass.Unavailable, "TPM unavailable")
	// ErrBinding: the TPM refuses the sealed blobs themselves
	// (TPM_RC_INTEGRITY): they were made on another TPM, the owner
	// hierarchy was cleared since, or they were altered. Permanent.
	ErrBinding = errclass.New(errclass.Integrity, "the TPM refuses this binding (sealed on another TPM, owner hierarchy cleared, or altered)")
	// ErrFormat: Parse refuses the bytes.
	ErrFormat = errclass.New(errclass.Integrity, "malformed TPM binding")
	// ErrArgument: a plaintext or buffer length, or a PCR list, that the
	// package does not take.
	ErrArgument = errclass.New(errclass.Invalid, "invalid argument")
)
