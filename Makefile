# tcoder — the two commands of the README, plus helpers. Both run the set-up first, which
# installs what is missing (Debian packages, the pinned nats-server) and skips what is there.

.PHONY: setup run test test-quick bench bench-engine bench-playable bench-ladder split-check soak image-check compose-check build lint ci

setup:
	./scripts/setup.sh

## Start the whole pipeline on this host (Ctrl-C stops it).
run: setup
	cargo build --release --workspace
	./target/release/tcoder up

## Run the test suite against real nats-server, redis-server, S3 and FFmpeg.
test: setup
	cargo test --workspace

## The suite without its deliberately slow fault windows (the 220 s Redis outage, five Redis
## hangs, the 3-minute object-store outage, the chaos run), for the edit-compile loop. CI runs
## `make test`, all of it.
test-quick: setup
	cargo test --workspace -- \
		--skip outages::a_220s_redis_outage \
		--skip outages::five_redis_hangs \
		--skip outages::a_3_minute_object_store_outage \
		--skip chaos::jobs_survive_random_faults

## Every benchmark section (engine vs FFmpeg, control plane, memory, split title, playable,
## per-title ladder); rewrites docs/BENCHMARKS.md (~3 h, 2 of them the playable titles).
bench:
	./scripts/bench.sh

## Section a alone: the engine against FFmpeg on the 10 s sources (~8 min).
bench-engine:
	./scripts/bench_engine.sh

bench-playable:
	./scripts/bench_playable.sh

## Four 30 s sources through the fixed and the per-title ladder; splices section f (~15 min).
bench-ladder:
	./scripts/bench_ladder.sh

## A 4-minute 1080p title split into 60 s chunks and stitched, checked against the whole
## encode (frames, segments, PSNR within 0.1 dB, one timeline, faststart MP4s); ~30 min.
split-check:
	./scripts/split_check.sh

## The chaos test for 30 minutes of random faults (reliability case T39); writes
## target/soak-report.md. SOAK_SECS and TCODER_CHAOS_SEED change the length and replay a run.
SOAK_SECS ?= 1800
soak: setup
	cargo build --workspace
	TCODER_CHAOS_SECS=$(SOAK_SECS) TCODER_CHAOS_REPORT=$(CURDIR)/target/soak-report.md \
		cargo test -p tcoder-worker --test it chaos:: -- --nocapture

## Build the container images (deploy/images/Dockerfile) with podman on a Debian base made by
## mmdebstrap, and complete a job in the worker image as its non-root user (docs/DEPLOY.md).
image-check: setup
	./scripts/image-check.sh

## Bring deploy/compose/compose.yaml up with podman-compose from this clone (stand-ins for the
## NATS and Valkey images: no registry here) and complete a job from the host (docs/DEPLOY.md).
compose-check: setup
	./scripts/compose-check.sh

build: setup
	cargo build --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	# The benchmark-only no-op engine is behind a feature no normal build enables.
	cargo clippy -p tcoder-worker --features bench -- -D warnings
	# The worker's and the engine's modules import each other in no circle.
	python3 scripts/import_cycles.py bins/worker/src engine/src

ci: test lint
