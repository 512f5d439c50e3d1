# The seed's commands (README, "The seed's commands"):
#   make            bin/tls-pass, bin/proxy, bin/eps
#   make examples   bin/internal-server
#   make test       every test (= deno task test)
#   make demo       the demo (= deno task demo)
#   make clean      removes bin/ and dist/
#
# bin/tls-pass is the compiled executable (deno task compile) where Deno can download its runtime,
# the binary named by TLS_PASS_BIN when set, and otherwise a launcher of `deno run -A cli.ts`.
# bin/proxy, bin/eps and bin/internal-server are thin launchers of bin/tls-pass (tools/bin/).

DENO ?= deno
DENO_BIN := $(shell command -v $(DENO) 2>/dev/null)
# bin/tls-pass is rebuilt when a source changes
SOURCES := $(shell git ls-files '*.ts' deno.json deno.lock 2>/dev/null || find lib cli.ts deno.json -name '*.ts' -o -name '*.json')

.PHONY: all examples test demo clean FORCE
all: bin/tls-pass bin/proxy bin/eps
examples: bin/tls-pass bin/internal-server

# the TLS_PASS_BIN of the last make: bin/tls-pass is made again when it changes
bin/.tls-pass-bin: FORCE
	@mkdir -p bin
	@echo "$(TLS_PASS_BIN)" | cmp -s - $@ || echo "$(TLS_PASS_BIN)" >$@

bin/tls-pass: $(SOURCES) Makefile tools/bin/tls-pass bin/.tls-pass-bin
	@[ -n "$(DENO_BIN)" ] || { echo "make: $(DENO) not found: install Deno 2.9 or run make DENO=/path/to/deno" >&2; exit 1; }
	@mkdir -p bin
	@rm -f $@
	@if [ -n "$(TLS_PASS_BIN)" ]; then \
	  ln -s "$(abspath $(TLS_PASS_BIN))" $@; \
	  echo "make: bin/tls-pass is $(abspath $(TLS_PASS_BIN)) (TLS_PASS_BIN)"; \
	elif "$(DENO_BIN)" task -q compile >/dev/null 2>bin/.compile.err; then \
	  cp dist/tls-pass $@; \
	  echo "make: bin/tls-pass compiled (deno compile)"; \
	elif grep -q "cannot compile: deno compile must download its runtime" bin/.compile.err; then \
	  sed 's|@DENO@|$(DENO_BIN)|' tools/bin/tls-pass >$@ && chmod +x $@; \
	  echo "make: deno compile cannot download its runtime here, so bin/ gets launchers that run \"$(DENO_BIN) run -A cli.ts\" from $(CURDIR)"; \
	else \
	  cat bin/.compile.err >&2; exit 1; \
	fi
	@rm -f bin/.compile.err

bin/proxy bin/eps bin/internal-server: bin/%: tools/bin/%
	@mkdir -p bin
	@cp $< $@ && chmod +x $@

test:
	$(DENO) task test

demo:
	$(DENO) task demo

clean:
	rm -rf bin dist
