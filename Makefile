# gptdash: `make run` starts the dashboard on the built-in small corpus,
# `make test` runs every test. Both fetch libtorch on first use (scripts/libtorch.sh).
CARGO := ./scripts/cargo.sh
ARGS ?=

.PHONY: run build test lint fmt bench libtorch clean

run: build
	./target/release/gptdash $(ARGS)

build:
	$(CARGO) build --release

test:
	# fault-injection: the save-fault hook the crash tests drive (never in release builds).
	$(CARGO) test --all-targets --features fault-injection
	# The device check's CPU half (scripts/gpu_check.sh), so the script cannot rot.
	scripts/gpu_check.sh --quick --bin target/debug/gptdash --out target/gpu_check.json

lint:
	cargo fmt --check
	$(CARGO) clippy --all-targets --features fault-injection -- -D warnings
	# and the release configuration (no fault hook), which make run builds
	$(CARGO) clippy --lib --bins -- -D warnings

fmt:
	cargo fmt

libtorch:
	@./scripts/libtorch.sh

clean:
	cargo clean
