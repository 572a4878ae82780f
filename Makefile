# sealbox: build, test, run, install.
GO          ?= go
# runtime/secret (Go 1.26): key derivations, unwraps and key schedules run
# in secret.Do, which erases what they leave on stacks, in registers and on
# the heap. A plain go build works too; sealboxd status then says
# "memory_hygiene": "reduced".
export GOEXPERIMENT := runtimesecret
BIN         := bin
CMDS        := sealboxd sealbox-admin sealbox
# The release every binary's --version reports (with the commit Go records).
VERSION     ?= 0.1.0
COMMIT      ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS     := -X github.com/sealbox/sealbox/internal/version.Version=$(VERSION) \
               -X github.com/sealbox/sealbox/internal/version.Commit=$(COMMIT)

# Installation; DESTDIR stages a package, PREFIX moves the binaries.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
# A package (DESTDIR) puts units where packages do; a live install where
# the administrator's own go.
UNITS       := sealboxd.service sealbox-askpass.service sealbox-tang.socket sealbox-tang@.service sealbox-tpm2.socket sealbox-tpm2@.service
UNITDIR     ?= $(if $(DESTDIR),/usr/lib/systemd/system,$(SYSCONFDIR)/systemd/system)
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
DOCDIR      ?= $(PREFIX)/share/doc/sealbox
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

.PHONY: all build test vet fmt-check bench demo run install uninstall clean fuzz crash soak docs deb

# Long runs of the hostile-conditions suites (the quick versions run in CI).
FUZZTIME ?= 10m
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

crash:
	SEALBOX_CRASH_KILLS=$${SEALBOX_CRASH_KILLS:-200} $(GO) test -count=1 -timeout 2h -run TestCrashConsistency -v ./cmd/sealbox-admin

soak:
	SEALBOX_SOAK_READS=$${SEALBOX_SOAK_READS:-1000000} $(GO) test -count=1 -timeout 1h -run 'TestSoakReads|TestReadsDuringChanges' -v ./cmd/sealboxd

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# The whole suite, race detector on. The README and .ci/run use this command.
test:
	$(GO) test -race ./...

# Man pages (docs/man) and shell completions (completions/) are generated
# from the command tables and the shipped sealboxd.toml; make test fails
# when they are stale, and this rewrites them.
docs:
	SEALBOX_UPDATE_DOCS=1 $(GO) test -count=1 -run '^TestGeneratedDocsAreCurrent$$' ./cmd/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Benchmarks report same-run ratios against a baseline (docs/BENCHMARKS.md):
# the process-level harness, then the in-package benchmarks.
# ARGON2_OPT= names the reference Argon2 built with OPTTARGET=native to
# compare with (scripts/kdf-compare.sh builds one); run as root to measure
# start-up after dropping the page cache.
bench: build
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/sealbox-bench
	$(BIN)/sealbox-bench --daemon $(BIN)/sealboxd --json $(BIN)/bench.json $(if $(ARGON2_OPT),--argon2-opt $(ARGON2_OPT))
	$(GO) test -run '^$$' -bench . -benchtime 5x ./unseal ./admin ./daemon

# End to end on local defaults: everything under ./.sealbox-demo, no root.
demo run: build
	./scripts/demo.sh

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/sealbox $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(addprefix $(BIN)/,$(CMDS)) $(DESTDIR)$(BINDIR)/
	@# An existing configuration is the operator's: never overwrite it.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/sealbox/sealboxd.toml ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/sealbox/sealboxd.toml"; \
	else \
		install -m 0644 config/sealboxd.toml $(DESTDIR)$(SYSCONFDIR)/sealbox/sealboxd.toml; \
	fi
	for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/|$(BINDIR)/|' -e 's|/etc/sealbox/|$(SYSCONFDIR)/sealbox/|' \
			-e 's|file:///usr/share/doc/sealbox/|file://$(DOCDIR)/|' $$u > $(DESTDIR)$(UNITDIR)/$$u; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; \
	done
	install -m 0644 debian/sealbox.sysusers $(DESTDIR)$(SYSUSERSDIR)/sealbox.conf
	install -m 0644 debian/sealbox.tmpfiles $(DESTDIR)$(TMPFILESDIR)/sealbox.conf
	install -m 0644 README.md docs/operations.md docs/threat-model.md keyring/FORMAT.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 docs/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 docs/man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 docs/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	for c in sealbox sealbox-admin; do \
		install -m 0644 completions/$$c.bash $(DESTDIR)$(BASHCOMPDIR)/$$c; \
		install -m 0644 completions/_$$c $(DESTDIR)$(ZSHCOMPDIR)/_$$c; \
		install -m 0644 completions/$$c.fish $(DESTDIR)$(FISHCOMPDIR)/$$c.fish; \
	done
	@# On a live system (no DESTDIR): create the user and the keyring's
	@# directory now, and tell systemd.
	@if [ -z "$(DESTDIR)" ]; then \
		if command -v systemd-sysusers >/dev/null && [ -d /run/systemd/system ]; then systemd-sysusers $(SYSUSERSDIR)/sealbox.conf; \
		else id sealbox >/dev/null 2>&1 || useradd --system --home-dir /var/lib/sealbox --shell /usr/sbin/nologin sealbox; \
			getent group sealbox-unattended >/dev/null || groupadd --system sealbox-unattended; fi; \
		install -d -o sealbox -g sealbox -m 0700 /var/lib/sealbox; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
		echo "next: sudo -u sealbox sealbox-admin init --keyring /var/lib/sealbox/keyring.db --admin NAME, then systemctl enable --now sealboxd"; \
	fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(CMDS)) $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
		$(DESTDIR)$(SYSUSERSDIR)/sealbox.conf $(DESTDIR)$(TMPFILESDIR)/sealbox.conf \
		$(DESTDIR)$(MANDIR)/man1/sealbox.1 $(DESTDIR)$(MANDIR)/man5/sealboxd.toml.5 $(DESTDIR)$(MANDIR)/man8/sealboxd.8 $(DESTDIR)$(MANDIR)/man8/sealbox-admin.8 \
		$(DESTDIR)$(BASHCOMPDIR)/sealbox $(DESTDIR)$(BASHCOMPDIR)/sealbox-admin $(DESTDIR)$(ZSHCOMPDIR)/_sealbox $(DESTDIR)$(ZSHCOMPDIR)/_sealbox-admin \
		$(DESTDIR)$(FISHCOMPDIR)/sealbox.fish $(DESTDIR)$(FISHCOMPDIR)/sealbox-admin.fish
	rm -rf $(DESTDIR)$(DOCDIR)
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/sealbox and /var/lib/sealbox (the keyring): remove them yourself once you are sure"

# The Debian package, with the standard tooling (debian/), into dist/. It
# builds with this machine's Go, offline from its module cache.
deb:
	GOCACHE=$$($(GO) env GOCACHE) GOMODCACHE=$$($(GO) env GOMODCACHE) \
		dpkg-buildpackage -us -uc -b --no-pre-clean
	@mkdir -p dist
	mv ../sealbox_$(VERSION)-*_*.deb ../sealbox_$(VERSION)-*_*.buildinfo ../sealbox_$(VERSION)-*_*.changes dist/
	@ls dist/sealbox_$(VERSION)-*_*.deb

clean:
	rm -rf $(BIN) .sealbox-demo dist debian/sealbox debian/.debhelper debian/files debian/*.substvars \
		debian/*.debhelper debian/*.debhelper.log debian/debhelper-build-stamp
