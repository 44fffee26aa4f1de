# Switchboard — the two commands users need:
#   make run    install what is missing, build (release), start the demo appliance
#   make test   install the test peers, then run every test (unit, simulation,
#               real-peer integration, fuzz smoke)
# Both work on a fresh Debian machine with the Rust toolchain, as root or with sudo.

SHELL := /bin/bash
CARGO ?= cargo

# Debian packages. Run: what the build links against. Test: the real peers.
RUN_PKGS  := pkg-config libopus-dev
TEST_PKGS := $(RUN_PKGS) sip-tester baresip tshark iproute2 procps curl openssl

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test build deps-run deps-test nextest lint fuzz-smoke bench clean

# Installs the Debian packages named in $(1) that are not installed yet.
define apt_install
	@missing=""; \
	for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | $(SUDO) debconf-set-selections; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi
endef

deps-run:
	$(call apt_install,$(RUN_PKGS))

deps-test:
	$(call apt_install,$(TEST_PKGS))

build: deps-run
	$(CARGO) build --release --locked

run: build
	./target/release/switchboard run --config firmware-config/default.toml

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The test runner: cargo-nextest (parallel processes, one appliance each).
nextest:
	@$(CARGO) nextest --version >/dev/null 2>&1 || { echo "make: installing cargo-nextest"; $(CARGO) install --locked cargo-nextest; }

NEXTEST := $(CARGO) nextest run --locked --no-fail-fast

test: deps-test nextest lint
	$(NEXTEST) --lib --bins --tests -E 'not binary(burst)'
	@echo "make: OPTIONS burst (alone, so nothing else loads the box)"
	$(NEXTEST) --test burst
	$(MAKE) fuzz-smoke

# Builds every cargo-fuzz target (stable toolchain, no sanitizer), replays the
# saved reproducers in tests/fuzz/regressions and fuzzes each target briefly.
fuzz-smoke:
	tests/fuzz/smoke.sh

bench:
	$(CARGO) bench --bench sip_parse
	$(CARGO) bench --bench udp_forward
	$(CARGO) bench --bench media_mix
	$(CARGO) bench --bench media_dsp
	$(CARGO) bench --bench recwrite
	$(CARGO) bench --bench acd

clean:
	$(CARGO) clean
