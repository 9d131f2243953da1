# neat: the two commands a new user runs are `make run` and `make test`.
# Both install missing Debian packages (scripts/install-deps), build, then run.
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
RUN_ARGS   ?=

.PHONY: all deps configure build run test test-asan test-reference bench format clean

all: build

deps:
	@scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: the corpora from the installed Debian packages (once), then the prepared test
# split of every domain and Fashion-MNIST test images through the whole pipeline; the report is
# printed and written to out/report.json.
# Only the `neat` executable is built for it (not the tests and benchmarks), so that a fresh
# machine reaches the report sooner.
run: configure
	@cmake --build $(BUILD) -j $(JOBS) --target neat
	@test -f data/corpus/manifest.json || $(BUILD)/cli/neat data prepare >/dev/null
	$(BUILD)/cli/neat run --out out $(RUN_ARGS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 600

test-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNEAT_SANITIZE=ON -DNEAT_BUILD_BENCH=OFF >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(BUILD_ASAN) --output-on-failure -j $(JOBS) --timeout 1200

# Regenerates tests/reference/*.bin with Debian's python3-torch.
test-reference:
	@scripts/install-deps --reference
	python3 tests/reference/make_reference.py
	$(MAKE) test

bench: build
	@for b in $$(find $(BUILD)/bench -maxdepth 2 -type f -name 'bench_*' -perm -u+x | sort); do \
	  echo "== $$b"; $$b; done

format:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
