# connectd front door: make demo | make test | make bench  (SANITIZE=1 for ASan+UBSan)
BUILD_DIR ?= build
SANITIZE ?= 0
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=$(if $(filter 1,$(SANITIZE)),Debug,RelWithDebInfo) \
              -DCONNECTD_SANITIZE=$(if $(filter 1,$(SANITIZE)),ON,OFF)

.PHONY: all deps build test unit integration demo bench format format-check clean

all: build

deps:
	@scripts/install-deps

build:
	@cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: deps build
	@SANITIZE=$(SANITIZE) BUILD_DIR=$(BUILD_DIR) scripts/run-tests

# Unit and plugin tests only (no services).
unit: build
	@cd $(BUILD_DIR) && ctest --output-on-failure

demo: deps build
	@BUILD_DIR=$(BUILD_DIR) scripts/demo

bench: deps build
	@BUILD_DIR=$(BUILD_DIR) bench/run

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD_DIR)
