package audit

// Kind is what an audit record is about. The table below is the one place
// that says which kinds exist and which are only ever written with the audit
// key at hand: Verify refuses an unkeyed record of such a kind with an OK
// outcome, so someone who can write the file cannot forge one as an
// "unanchored" tail.
type Kind string

// Outcome is how an event ended.
type Outcome string

// Outcomes.
const (
	OK            Outcome = "ok"
	Refused       Outcome = "refused"
	WrongPassword Outcome = "wrong_password"
	Failed        Outcome = "error"
	Backoff       Outcome = "backoff"
	Served        Outcome = "served"
	SealedOutcome Outcome = "sealed"
	WriteFailed   Outcome = "write-failed"
	TimedOut      Outcome = "timed-out"
	AlreadyDone   Outcome = "already"
)

// Kinds.
const (
	KindInit               Kind = "init"
	KindUnseal             Kind = "unseal"
	KindSeal               Kind = "seal"
	KindCheck              Kind = "check"
	KindUpgrade            Kind = "format.upgrade"
	KindRead               Kind = "read"
	KindCredential         Kind = "credential"
	KindAdminAdd           Kind = "admin.add"
	KindAdminRemove        Kind = "admin.remove"
	KindAdminPasswd        Kind = "admin.passwd"
	KindAdminInvite        Kind = "admin.invite"
	KindAdminEnroll        Kind = "admin.enroll"
	KindAdminRekey         Kind = "admin.rekey"
	KindAdminRefresh       Kind = "admin.refresh"
	KindAdminUnlock        Kind = "admin.unlock"
	KindAdminPolicy        Kind = "admin.policy"
	KindClientAdd          Kind = "client.add"
	KindClientDisable      Kind = "client.disable"
	KindClientEnable       Kind = "client.enable"
	KindClientRemove       Kind = "client.remove"
	KindSecretRotate       Kind = "secret.rotate"
	KindSecretExport       Kind = "secret.export"
	KindRecoveryRegenerate Kind = "recovery.regenerate"
	KindRepair             Kind = "repair"
	KindAuditPrune         Kind = "audit.prune"
	KindAuditVerify        Kind = "audit.verify"
	KindBackup             Kind = "backup"
	KindSlotBind           Kind = "slot.bind"
	KindSlotUnbind         Kind = "slot.unbind"
	KindSlotReseal         Kind = "slot.reseal"
)

// kinds lists every kind this build writes, with its properties.
var kinds = map[Kind]struct {
	// keyed: an OK record of this kind is only ever written with the
	// audit key (it is the record of a change or unseal an admin's
	// password authenticated, or of the daemon's own keyed bookkeeping).
	keyed bool
}{
	KindInit: {true}, KindUnseal: {true}, KindCheck: {true}, KindUpgrade: {true},
	KindAdminAdd: {true}, KindAdminRemove: {true}, KindAdminPasswd: {true}, KindAdminInvite: {true},
	KindAdminEnroll: {true}, KindAdminRekey: {true}, KindAdminRefresh: {true}, KindAdminUnlock: {true}, KindAdminPolicy: {true},
	KindClientAdd: {true}, KindClientDisable: {true}, KindClientEnable: {true}, KindClientRemove: {true},
	KindSecretRotate: {true}, KindSecretExport: {true}, KindRecoveryRegenerate: {true}, KindRepair: {true}, KindAuditPrune: {true},
	KindSlotBind: {true}, KindSlotUnbind: {true}, KindSlotReseal: {true},
	KindSeal: {}, KindRead: {}, KindCredential: {}, KindAuditVerify: {}, KindBackup: {},
}

// keyedOnly reports whether a record of this kind with outcome o is only
// ever written keyed.
func (k Kind) keyedOnly(o Outcome) bool { return o == OK && kinds[k].keyed }

// Known reports whether this build writes records of kind k.
func (k Kind) Known() bool { _, ok := kinds[k]; return ok }

var outcomes = map[Outcome]bool{OK: true, Refused: true, WrongPassword: true, Failed: true, Backoff: true,
	Served: true, SealedOutcome: true, WriteFailed: true, TimedOut: true, AlreadyDone: true}

// Known reports whether o is an outcome this build writes.
func (o Outcome) Known() bool { return outcomes[o] }
