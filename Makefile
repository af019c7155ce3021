# start_server: build, test, install, demo, bench.
#
# `make` builds the static musl binary at $(BIN). The release build
# rebuilds the standard library without its backtrace symbolizer (about
# 200 KB of DWARF parsing that std's panic hook links in, useless in a
# panic=abort binary) and with its optimize_for_size code paths, and
# leaves out unwind tables (nothing unwinds when panics abort; 40 KB, all
# of it resident once mapped): that needs rust-src and RUSTC_BOOTSTRAP
# for the -Z build-std flags, on the stable toolchain. Panics abort at
# once, without formatting a message (-C panic=immediate-abort): the
# supervisor's code is built to have none (see the lints in src/lib.rs),
# and the formatting machinery a panic message needs is left out. The
# binary is linked to load at a fixed address (-C relocation-model=static),
# as a C program linked with -static is, not as a static PIE: a PIE
# relocates itself at every start (musl's start-up code rewrites every
# pointer in its data, a read then a copy-on-write fault on the page),
# and its code reaches data through the GOT. Fixed, it starts about 20 us
# sooner and is 5.5 KB smaller; what address randomisation of the image
# would hide matters little in a program with no unsafe parsing of what
# others send it (its stack, and the C library's heap and mappings, are
# still placed at random). The linker is the toolchain's own lld
# (rust-lld, in every rustup toolchain), which does not pad the segments
# to pages in the file. The read-only data shares the code's mapping
# (--no-rosegment), as it did in every binary before linkers began to
# split them: one mapping fewer to make at every exec, and the two fault
# in together (two page faults fewer, about 15 us sooner to the first
# worker), for read-only data that can be executed. No RELRO segment: the
# start-up code of a static musl binary never makes it read-only
# (/proc/PID/maps shows it writable), so it only split the writable data
# in two mappings, one more to make at every exec and one more page to
# fault in. LLVM's machine outliner turns repeated instruction sequences
# into calls (3 KB less; start-up time the same, by `bench startup`;
# functions that use the red zone are left alone).

TARGET   := x86_64-unknown-linux-musl
BIN      := target/$(TARGET)/release/start_server
PREFIX   ?= /usr/local
DESTDIR  ?=
PORT     ?= 8080
CARGO    ?= cargo
RELEASE  := RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C force-unwind-tables=no -C panic=immediate-abort -Zunstable-options -C linker-flavor=gnu-lld-cc -C link-self-contained=+linker -C link-arg=-Wl,-z,norelro -C link-arg=-Wl,--no-rosegment -C llvm-args=-enable-machine-outliner=always" RUSTC_BOOTSTRAP=1 $(CARGO) build --release -Z build-std=std,panic_abort -Z build-std-features=optimize_for_size

.PHONY: all build prereqs check test soak fuzz install uninstall demo bench container clean

all: build

prereqs:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	@rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src

build: prereqs
	$(RELEASE) --bin start_server
	@ls -l $(BIN)

# The fast loop, for every change: formatting, lints, the unit tests and
# the docs, warnings denied (under a minute on a warm build). `make test`
# before committing a change of behaviour.
check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --lib
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items

# Unit, integration and doc tests on a debug build, then the integration
# tests again against the release binary that ships. A test that cannot
# run here (no podman, not root, ...) skips on a developer's machine and
# fails under CI (CI or START_SERVER_TESTS_REQUIRE_ALL set); the skips
# are counted at the end. Most integration tests wait on timers and
# processes, so four run at once on two cores. The rolls of real servers
# under load (a minute of uvicorn and node restarting) run once, against
# the release binary.
SKIPS := $(CURDIR)/target/skipped-tests
ONCE  := workers_roll_without_a_failed_request
test: build
	@rm -f $(SKIPS)
	START_SERVER_SKIPS=$(SKIPS) $(CARGO) test -- --test-threads=4 --skip $(ONCE)
	START_SERVER_SKIPS=$(SKIPS) START_SERVER_BIN=$(CURDIR)/$(BIN) $(CARGO) test --test integration -- --test-threads=4
	@touch $(SKIPS); echo "$$(wc -l < $(SKIPS)) tests skipped"; cat $(SKIPS)

# Long runs, not for CI: 1,000 restarts under load with 200 live upgrades,
# start_server's descriptors, memory and children printed every 100.
soak: build
	$(CARGO) build --release --examples
	START_SERVER_BIN=$(CURDIR)/$(BIN) $(CARGO) test --release --test integration -- --ignored --nocapture soak

# Every fuzz target for FUZZ_SECONDS each (cargo-fuzz and libFuzzer, on
# the stable toolchain through RUSTC_BOOTSTRAP): not for CI. A crash
# stops the run, its input in fuzz/artifacts/TARGET/; keep it as a unit
# test in src/fuzzing.rs once fixed.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := start_server_args socketmaster_args listen_specs envdir notify_message upgrade_state
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p fuzz/logs
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) > logs/$$t.log 2>&1 \
			|| { tail -30 logs/$$t.log; echo "$$t: CRASH, see fuzz/artifacts/$$t/"; exit 1; }; \
		echo "$$t: $$(grep '^Done' logs/$$t.log)"; \
	done

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/start_server
	ln -sf start_server $(DESTDIR)$(PREFIX)/bin/socketmaster
	install -m 644 man/start_server.1 $(DESTDIR)$(PREFIX)/share/man/man1/start_server.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/start_server $(DESTDIR)$(PREFIX)/bin/socketmaster $(DESTDIR)$(PREFIX)/share/man/man1/start_server.1

# The example server under start_server on 127.0.0.1:$(PORT), in the
# foreground: curl it, `kill -HUP` it, Ctrl-C to stop.
demo: build
	$(CARGO) build --release --example hello
	@echo "try: curl http://127.0.0.1:$(PORT)/   kill -HUP <start_server pid>"
	$(BIN) --port=127.0.0.1:$(PORT) --interval=0.5 -- target/$(TARGET)/release/examples/hello

# Size, idle memory, idle wake-ups, start-up latency, hand-overs and
# several workers (scaling, spread, rolls under load), side by side with
# Perl's Server::Starter when it is installed.
bench: build
	$(CARGO) build --release --example bench --example hello
	CARGO_PROFILE_RELEASE_STRIP=false $(RELEASE) --bin start_server --target-dir target/symbols
	target/$(TARGET)/release/examples/bench $(BIN) target/symbols/$(TARGET)/release/start_server

# The example image (examples/Containerfile): start_server and the
# example server, FROM scratch.
PODMAN ?= podman
container: build
	$(CARGO) build --release --example hello
	rm -rf target/container && mkdir -p target/container
	cp $(BIN) target/$(TARGET)/release/examples/hello examples/Containerfile target/container/
	$(PODMAN) build -t start_server-example target/container

clean:
	$(CARGO) clean
