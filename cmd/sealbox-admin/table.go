package main

import (
	"flag"

	"github.com/sealbox/sealbox/internal/askpw"
	"github.com/sealbox/sealbox/keyring"
)

// commands is sealbox-admin's one command table, in the order --help lists
// them: each command's name, positional arguments, required flags, one-line
// summary, help text, flags and handler. The usage text, each command's
// --help, the check of required flags and of the number of arguments all
// come from it.
var commands = []*command{
	{
		name: "init", summary: "create a keyring with its first admin", required: []string{"keyring", "admin"},
		help: "Create a keyring with its first admin. Prompts: NAME's new password.\nWithout --secret-file the master secret is 32 random bytes. Argon2id is\ncalibrated to --kdf-time on this host, unless --kdf-memory, --kdf-iterations\nor --kdf-parallelism is given: then those (the floor t=3 m=64MiB p=4 for\nthe others) are the keyring's policy and the first slot's parameters.",
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.admin, "admin", "", "the first admin's `name`")
			fs.StringVar(&o.secretFile, "secret-file", "", "read the master secret from this `file` (at most 64 KiB)")
			fs.StringVar(&o.kdfTime, "kdf-time", "1s", "calibrate Argon2id to about this `duration` per unlock (never below t=3 m=64MiB p=4)")
			fs.UintVar(&o.kdfMaxMemory, "kdf-max-memory", 1024, "calibrate with at most this much Argon2id memory, in `MiB` (64 to 4096)")
			fs.BoolVar(&o.recoveryCode, "recovery-code", false, "also create a recovery code and print it once")
			kdfFlags(fs, o)
		},
		do: (*cli).init,
	},
	{
		name: "unseal", mode: daemonOnly, summary: "unseal the daemon with an admin's password, or --recovery with the recovery code",
		help: "Unseal the running daemon. Prompt: NAME's password (or, with --recovery,\nthe recovery code).",
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.admin, "admin", "", "admin `name`")
			fs.BoolVar(&o.recovery, "recovery", false, "use the recovery code instead of an admin's password")
		},
		do: (*cli).unseal,
	},
	{
		name: "ask-unseal", mode: daemonOnly, summary: "ask for an unseal through systemd's password agents (boot console, Plymouth)",
		help: "Ask for an unseal through systemd's password agents, as systemd-cryptsetup\ndoes: at the boot console, in Plymouth, or over ssh with\nsystemd-tty-ask-password-agent. It asks for an admin's name, then their\npassword, tries them, asks again after a wrong one, and ends (exit 0) once\nthe daemon is unsealed by any path. Runs as root (only root may ask the\nagents); sealbox-askpass.service runs it at boot.",
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.expires, "timeout", "0s", "give up after this `duration` (0: until unsealed)")
			fs.StringVar(&o.to, "ask-dir", askpw.DefaultDir, "the agents' `directory`")
		},
		do: (*cli).askUnseal,
	},
	{
		name: "seal", mode: daemonOnly, summary: "seal the daemon (wipes the secret from memory)",
		help: "Seal the running daemon: the master secret is wiped from its memory\nand services get 503 until the next unseal.",
		do:   (*cli).seal,
	},
	{
		name: "status", summary: "daemon state, or the file's summary offline",
		help:  "Show the daemon's state (or, with --keyring, the file's summary).",
		flags: jsonFlag,
		do:    (*cli).status,
	},
	{
		name: "add", summary: "add admin NAME, authorized by ACTOR", required: []string{"as"},
		args: " NAME", nPos: 1,
		help: "Add admin NAME. Prompts: ACTOR's password, NAME's new password.\nThe new slot gets the keyring's KDF policy, or the Argon2id parameters\ngiven (never below the policy; those not given are the policy's).",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			kdfFlags(fs, o)
		},
		do: (*cli).add,
	},
	{
		name: "remove", summary: "remove admin NAME (never the last one)", required: []string{"as"},
		args: " NAME", nPos: 1,
		help: "Remove admin NAME's slot (or a pending invite, or with NAME recovery the\nrecovery code). The last admin cannot be removed; unattended slots are\nunbind's. Prompt: ACTOR's password. A removed admin who kept a copy of the\nfile can still open that copy: --rekey replaces the DataKey in the same\ntransaction, so the copy opens nothing written from then on.",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			fs.BoolVar(&o.rekey, "rekey", false, "rekey in the same transaction as the removal (same password; unattended slots are removed)")
		},
		do: (*cli).remove,
	},
	{
		name: "bind tang", summary: "add a slot that unseals while a Tang server answers", required: []string{"as"},
		args: " URL", nPos: 1,
		help: "Add an unattended slot bound to the Tang server at URL: sealboxd unseals\nat start, with no person, while it can reach that server (which never\nsees the key). The advertisement is fetched here and must be signed by\nthe key whose thumbprint --thp gives (read it on the server); without\n--thp the thumbprints are shown to confirm on the terminal. The slot is\nstored as a clevis JWE: clevis decrypt opens it too. Prompt: ACTOR's\npassword.\nExit: 0 bound, 5 the server did not answer, 6 not signed by --thp.",
		flags: func(fs *flag.FlagSet, o *opts) {
			bindFlags(fs, o)
			fs.StringVar(&o.thp, "thp", "", "trust the advertisement signed by the key with this `thumbprint` (S256)")
		},
		do: (*cli).bindTang,
	},
	{
		name: "bind tpm2", summary: "add a slot sealed to this machine's TPM", required: []string{"as"},
		help: "Add an unattended slot sealed to this machine's TPM and the current\nvalues of --pcrs (sha256 bank): sealboxd unseals at start while they are\nthe same. After a firmware, boot loader or kernel update changes them the\nslot fails cleanly, and the next admin unseal seals it again to the new\nvalues. Through the daemon, sealboxd reaches the TPM (tpm2_tcti); on the\nfile, this command does (--tcti). Prompt: ACTOR's password.",
		flags: func(fs *flag.FlagSet, o *opts) {
			bindFlags(fs, o)
			fs.StringVar(&o.pcrs, "pcrs", "7", "seal to these `PCRs`, comma-separated (7: Secure Boot state)")
			tpmFlags(fs, o)
		},
		do: (*cli).bindTPM2,
	},
	{
		name: "bind threshold", summary: "join unattended slots into one that needs K of them", required: []string{"as"},
		args: " K SLOT...", nPos: 2, variadic: true,
		help: "Replace the unattended slots named (tang, tpm2) by one slot that unseals\nonly when K of them answer: 2 of 3 Tang servers survives one server down\nand a disk carried off to another network. The key is split in shares\n(Shamir), one per member, each bound as its slot was (Tang offline; the\nTPM sealed again). Prompt: ACTOR's password.",
		flags: func(fs *flag.FlagSet, o *opts) {
			bindFlags(fs, o)
			tpmFlags(fs, o)
		},
		do: (*cli).bindThreshold,
	},
	{
		name: "unattended-helper", summary: "open one unattended binding for sealboxd (run by sealbox-tang@ and sealbox-tpm2@)", required: []string{"kind"},
		help: "Serve one request of sealboxd on stdin and stdout, as the socket-activated\nunits sealbox-tang@.service and sealbox-tpm2@.service run it (Accept=yes):\nopen a tang or tpm2 binding and answer with the key it yields, or seal a\nkey to the TPM, or say whether the PCRs changed. These units, not\nsealboxd, have the network (to the Tang servers) and the TPM device;\nthey never see the keyring. --kind says which requests it takes.\nThe wire format is in unseal/unattended (HelperRequest, HelperResponse).",
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.helperKind, "kind", "", "the requests to serve: `tang` or tpm2")
			tpmFlags(fs, o)
		},
		do: (*cli).unattendedHelper,
	},
	{
		name: "unbind", summary: "remove an unattended slot (tang, tpm2, threshold)", required: []string{"as"},
		args: " NAME", nPos: 1,
		help:  "Remove the unattended slot NAME. Admins are removed with remove, not\nunbind. A binding someone copied keeps opening that copy of the file:\nrekey after unbinding a slot whose server or TPM you no longer trust.\nPrompt: ACTOR's password.",
		flags: asFlag,
		do:    (*cli).unbind,
	},
	{
		name: "invite", summary: "print a one-time code for NAME to enroll with", required: []string{"as"},
		args: " NAME", nPos: 1,
		help: "Invite NAME to become an admin and choose their own password: prints a\none-time code (give it to them by a separate channel) that expires.\nPrompt: ACTOR's password. They run: sealbox-admin enroll NAME",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			fs.StringVar(&o.expires, "expires", "24h", "the code is valid for this `duration` (1m to 720h)")
		},
		do: (*cli).invite,
	},
	{
		name: "enroll", summary: "become admin NAME with an invite code",
		args: " NAME", nPos: 1,
		help: "Become admin NAME with an invite code. Prompts: the code, NAME's new\npassword. The code works once.",
		do:   (*cli).enroll,
	},
	{
		name: "list", summary: "list admins",
		help:  "List admins and their Argon2id parameters.",
		flags: jsonFlag,
		do:    (*cli).list,
	},
	{
		name: "slots", summary: "every slot: kind, Argon2id, created, last used, failures, backoff, state",
		help:  "Show every slot (cryptsetup's luksDump, without anything secret): its kind,\nArgon2id parameters, when it was created and last used (from the audit\nlog), failed attempts counted against it and how long tries are still\nrefused, a pending rekey, an invite's expiry, and whether it is below the\nKDF policy (rewrapped at its owner's next login). Needs no password;\nnothing shown is verified (check --as NAME does that).",
		flags: jsonFlag,
		do:    (*cli).slots,
	},
	{
		name: "unlock", summary: "clear the failed attempts counted against NAME (a lockout)", required: []string{"as"},
		args: " NAME", nPos: 1,
		help:  "Clear the failed attempts counted against admin NAME, so that their next\ntry is not delayed (after a typo storm, or guesses by someone else).\nRecorded in the audit log (admin.unlock). Your own count is cleared by any\nsuccessful login. The counter shared by all non-root callers is left alone\n(it decays an hour after its last failure; root is never held by it).\nPrompt: ACTOR's password. Exit 4 when nothing is counted against NAME.",
		flags: asFlag,
		do:    (*cli).unlock,
	},
	{
		name: "policy set", summary: "set the Argon2id parameters new slots get; lower slots are rewrapped at next login", required: []string{"as"},
		help: "Set the keyring's KDF policy: the Argon2id parameters new slots get\n(parameters not given keep their value). Never below the floor\n(t=3 m=64MiB p=4), nor, through the daemon, above its KDF memory budget.\nNo one can rewrap another admin's slot without their password, so each\nslot below the new policy is rewrapped at its owner's next login (unseal,\ncheck --as NAME, any change): cryptsetup's luksConvertKey, one admin at a\ntime. sealbox-admin slots shows which slots are still below.\nPrompt: ACTOR's password.",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			kdfFlags(fs, o)
		},
		do: (*cli).policySet,
	},
	{
		name: "passwd", summary: "change NAME's password",
		args: " NAME", nPos: 1,
		help:  "Change NAME's password. Prompts: current password, new password.\nThe new slot gets the keyring's KDF policy, or the Argon2id parameters\ngiven (never below the policy; those not given are the policy's).",
		flags: kdfFlags,
		do:    (*cli).passwd,
	},
	{
		name: "check", summary: "test NAME's password and verify the keyring (online too); offline, the file's pages",
		help: "Verify the keyring. Offline (--keyring): bbolt pages and the format; with\n--as NAME (prompt: NAME's password), also the DataKey, the state root over\nevery record, that the master secret decrypts, and the audit log; a format-1\nkeyring is upgraded by that login. With --repair (offline only), show what a\nrepair would do for what fails (drop failing records, invite their admins\nagain; nothing is ever re-signed) and do it once confirmed (on the terminal,\nor --yes).\nThrough the daemon, --as NAME is required: it tests NAME's password without\ndowntime (cryptsetup's --test-passphrase) and verifies the same, leaving the\ndaemon sealed or unsealed as it was. A wrong password counts toward NAME's\nbackoff exactly as a failed unseal does. Like any login, it rewraps NAME's\nslot if it is below the KDF policy.\nExit: 0 ok, 3 wrong password or unknown admin, 6 something does not verify,\n8 too many attempts (wait).",
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.as, "as", "", "admin `name` whose password unlocks the deeper checks")
			fs.BoolVar(&o.repair, "repair", false, "repair what fails (needs --as)")
			fs.BoolVar(&o.yes, "yes", false, "with --repair: do it without asking")
			jsonFlag(fs, o)
		},
		do: (*cli).check,
	},
	{
		name: "rotate", summary: "replace the master secret", required: []string{"as"},
		help: "Replace the master secret: a new value (32 random bytes, or --secret-file)\nencrypted under the DataKey. A running daemon serves it at once.\nPrompt: ACTOR's password.",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			fs.StringVar(&o.secretFile, "secret-file", "", "read the new master secret from this `file`")
		},
		do: (*cli).rotate,
	},
	{
		name: "rekey", summary: "replace the DataKey (after removing an admin)", required: []string{"as"},
		help: "Replace the DataKey, so that an old copy of the keyring and a removed\nadmin's password open nothing written from now on. The other admins keep\ntheir passwords; their slots take the new key at their next login. It ends\nevery credential a removed admin could know: the recovery code is replaced\n(the new one is printed once), outstanding invites are dropped, unless\n--keep-invites, and unattended slots are removed, unless --keep-unattended,\nwhich binds each again under a new key, to what the file holds (tpm2 ones\nneed the TPM: through the daemon, sealboxd's tpm2_tcti; on the file,\n--tcti). Prompt: ACTOR's password.",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			fs.BoolVar(&o.keepInvites, "keep-invites", false, "hand outstanding invites the new key instead of dropping them (their codes keep working)")
			fs.BoolVar(&o.keepUnattended, "keep-unattended", false, "bind the unattended slots again under new keys instead of removing them (to the servers, PCRs and members the file holds: not after removing an admin)")
			tpmFlags(fs, o)
		},
		do: (*cli).rekey,
	},
	{
		name: "recovery regenerate", summary: "create or replace the recovery code", required: []string{"as"},
		help:  "Create, or replace, the recovery code: a high-entropy code that unseals\nlike an admin password (sealbox-admin unseal --recovery). Printed once.\nPrompt: ACTOR's password.",
		flags: asFlag,
		do:    (*cli).recoveryRegenerate,
	},
	{
		name: "backup", summary: "a consistent copy of the keyring, mode 0600", required: []string{"to"},
		help:  "Write a consistent copy of the keyring (taken in one read transaction)\nto a new file, mode 0600. It is as sensitive as the keyring itself.",
		flags: func(fs *flag.FlagSet, o *opts) { fs.StringVar(&o.to, "to", "", "the new `file`") },
		do:    (*cli).backup,
	},
	{
		name: "export-secret", mode: fileOnly, summary: "write the master secret of a keyring file (a backup) to a new file", required: []string{"as", "out"},
		help: "Disaster recovery without a daemon (cryptsetup's --dump-volume-key): open\nthe keyring file (a backup, say) with ACTOR's password, verify it (the state\nroot, the header, the secret record and ACTOR's slot), and write the master\nsecret to --out FILE, created with mode 0600; an existing file is never\nreplaced. --out - writes to standard output, but not to a terminal\nunless --force. The export is recorded in the file's audit log\n(secret.export) when the file is writable; a read-only one is exported\nwithout a record (a warning says so). Prompt: ACTOR's password.\nExit: 0 written, 2 a terminal without --force, 3 wrong password or unknown\nadmin, 4 the output file exists (or was moved\nor replaced while the export ran), 5 the keyring is in use (stop the\ndaemon, or export from a backup), 6 the file does not verify, 8 too many\nattempts. Nothing is written unless everything verified.",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			fs.StringVar(&o.out, "out", "", "the new `file` (- for standard output)")
			fs.BoolVar(&o.force, "force", false, "with --out -: write to a terminal anyway")
		},
		do: (*cli).exportSecret,
	},
	{
		name: "client add", summary: "register a service by its uid/gid, its systemd unit, or both", required: []string{"as"},
		args: " NAME", nPos: 1,
		help: "Register a client: a local service identified by what the kernel reports\nfor its socket connections: its uid (and, if given, gid), its systemd unit,\nor both. When several clients match a peer, the most specific one decides\n(unit over uid, then gid); a registration identical to another is refused.\nPrompt: ACTOR's password.",
		flags: func(fs *flag.FlagSet, o *opts) {
			asFlag(fs, o)
			fs.Var(idFlag{v: &o.uid}, "uid", "the service's `user` (a uid, or a name such as www-data)")
			fs.Var(idFlag{v: &o.gid, group: true}, "gid", "also require this `group` (a gid or a name; with --uid)")
			fs.StringVar(&o.unit, "unit", "", "the service's systemd `unit`, such as web.service")
		},
		do: (*cli).clientAdd,
	},
	{
		name: "client list", summary: "list clients",
		help:  "List clients and their status.",
		flags: jsonFlag,
		do:    (*cli).clientList,
	},
	{
		name: "client disable", summary: "refuse a client's reads from the next request on", required: []string{"as"},
		args: " NAME", nPos: 1,
		help:  "Disable a client: its reads are refused at once. Prompt: ACTOR's password.",
		flags: asFlag,
		do:    func(c *cli, o *opts) error { return c.clientStatus(o, keyring.ClientDisabled, "disabled") },
	},
	{
		name: "client enable", summary: "enable a disabled client", required: []string{"as"},
		args: " NAME", nPos: 1,
		help:  "Enable a disabled client. Prompt: ACTOR's password.",
		flags: asFlag,
		do:    func(c *cli, o *opts) error { return c.clientStatus(o, keyring.ClientActive, "enabled") },
	},
	{
		name: "client remove", summary: "retire a client for good", required: []string{"as"},
		args: " NAME", nPos: 1,
		help:  "Retire a client for good (the record stays for the audit trail).\nPrompt: ACTOR's password.",
		flags: asFlag,
		do:    func(c *cli, o *opts) error { return c.clientStatus(o, keyring.ClientRetired, "retired") },
	},
	{
		name: "audit", summary: "show the audit log, or follow it",
		help: "Show the audit log: unseals, seals, admin and client changes (or, with\n--reads, client reads and refusals). --since and --until take a duration\nback from now (90m, 36h, 1d), a date (2026-11-20), a local time\n(2026-11-20 10:00) or an RFC 3339 time. --uid takes a number or a user name.\n\nWith --follow (through the daemon), the records stored are shown, then each\nnew one as it is written, until Ctrl-C; it goes on across seals. --jsonl\nwrites one JSON object a line (with --follow, --json does too); the fields\nare those of --json: seq, keyed, event {time, kind, actor, target, client,\npeer {uid, gid, pid, unit}, outcome, detail, count, first}.\nExit: 0; 5 when the daemon stops or drops a follower that fell behind.",
		flags: func(fs *flag.FlagSet, o *opts) {
			jsonFlag(fs, o)
			fs.BoolVar(&o.jsonl, "jsonl", false, "print JSON Lines: one record a line")
			fs.BoolVar(&o.follow, "follow", false, "keep showing new records as they are written (through the daemon)")
			fs.StringVar(&o.since, "since", "", "only records from this `time` (1d, 2026-11-20, RFC 3339)")
			fs.StringVar(&o.until, "until", "", "only records before this `time` (as --since)")
			fs.StringVar(&o.client, "client", "", "only records of this client `name`")
			fs.StringVar(&o.admin, "admin", "", "only records where this admin `name` acted or was acted on")
			fs.Var(idFlag{v: &o.auditUID}, "uid", "only records of requests from this `user` (a uid or a name)")
			fs.IntVar(&o.limit, "limit", 0, "only the newest `n` records (with --follow: of those stored; at most 1000)")
			fs.BoolVar(&o.reads, "reads", false, "show the log of client reads and refusals instead of events")
		},
		do: (*cli).auditList,
	},
	{
		name: "audit verify", summary: "verify the audit chains (offline: --as NAME)",
		help: "Verify the audit chain: every record follows its predecessor and is\nunaltered. Exits 6 naming the first bad record. Through the daemon it uses\nthe daemon's key (it must have been unsealed since it started); offline it\nneeds an admin: --as NAME (prompt: NAME's password).",
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.as, "as", "", "admin `name` whose password unlocks the audit key (offline)")
			jsonFlag(fs, o)
		},
		do: (*cli).auditVerify,
	},
}
