# derpd — the two commands of the quick start are `make run` and `make test`.
# Both install missing Debian packages first (scripts/install-deps).

GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build release run test test-unit test-asan test-tsan test-fuzz fuzz package clean

all: build

deps:
	@scripts/install-deps

# The project's own builds treat warnings as errors (DERPD_WERROR); a
# packager's cmake does not.
configure: deps
	@cmake -S . -B build -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDERPD_WERROR=ON $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build build -j $(JOBS)

# Starts the relay in dev mode on 127.0.0.1 (plain HTTP, no config file),
# building only what it runs: derpd and its roles, not the test suite.
# DERPD_DEV_ADDR and DERPD_DEV_STUN_PORT pick the ports (scripts/run-dev).
run: configure
	@cmake --build build -j $(JOBS) --target derpd derp-worker stun-worker cert-agent mesh-helper derpd-probe
	@scripts/run-dev build/bin

# A packager's build: Release, no -Werror, no tests (CI builds it with g++).
release: deps
	@cmake -S . -B build-release -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=Release -DDERPD_TESTS=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-release -j $(JOBS)

# Unit + integration tests (g++ build), then every fuzz target for a few seconds.
test: build
	ctest --test-dir build --output-on-failure -j $(JOBS) --timeout 600
	@$(MAKE) --no-print-directory test-fuzz

# The same unit and integration tests under AddressSanitizer + UBSan (clang).
test-asan: deps
	@cmake -S . -B build-asan -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=Debug -DDERPD_SANITIZE=ON -DDERPD_WERROR=ON \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan --output-on-failure -j $(JOBS) --timeout 900

# ThreadSanitizer (clang) on derp-worker's multi-threaded relay: its unit
# tests and the integration tests that relay through two event loops, with
# derpd and derp-worker built under TSan (a report in a log fails the test).
# tests/tsan.supp silences libzmq, which Debian does not build with TSan.
# .ci/run runs it after test-asan.
TSAN_TESTS ?= RelayTest|SlowReceiverTest|DupKeyTest|PeerGoneTest|MeshTest|MeshClusterTest|Registry|BootstrapThread|LimitsTest|DebugTest.CheckStaysOkay
test-tsan: deps
	@cmake -S . -B build-tsan -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=Debug -DDERPD_TSAN=ON -DDERPD_WERROR=ON \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target derpd derp-worker stun-worker cert-agent mesh-helper \
	  derp_worker_unit_tests derpd_integration_tests
	TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" ctest --test-dir build-tsan --output-on-failure \
	  -j $(JOBS) --timeout 900 -R '$(TSAN_TESTS)'

# libFuzzer targets, each run for FUZZ_SECONDS (a smoke run in `make test`).
FUZZ_SECONDS ?= 5
test-fuzz: deps
	@cmake -S . -B build-fuzz -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDERPD_FUZZ=ON -DDERPD_WERROR=ON \
	  -DDERPD_FUZZ_SECONDS=$(FUZZ_SECONDS) -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	ctest --test-dir build-fuzz --output-on-failure -j $(JOBS)

# Long fuzzing: 10 minutes per target.
fuzz:
	@$(MAKE) --no-print-directory test-fuzz FUZZ_SECONDS=600

# The Debian package (CPack): build/package/derpd_<version>_<arch>.deb.
package: build
	@cpack --config build/CPackConfig.cmake -B build/package >build/cpack.log 2>&1 || { cat build/cpack.log; exit 1; }
	@ls -1t $(CURDIR)/build/package/*.deb | head -n 1

clean:
	rm -rf build build-asan build-tsan build-fuzz build-release
