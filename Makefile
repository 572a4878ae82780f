# sealbox — build, test, run.
GO      ?= go
BIN     := bin
CMDS    := sealboxd sealbox-admin

.PHONY: all build test vet fmt-check bench demo run clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# The whole suite, race detector on. The README and .ci/run use this command.
test:
	$(GO) test -race ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Benchmarks report same-run ratios against a baseline (see README).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x ./...

# End to end on local defaults: everything under ./.sealbox-demo, no root.
demo run: build
	./scripts/demo.sh

clean:
	rm -rf $(BIN) .sealbox-demo
