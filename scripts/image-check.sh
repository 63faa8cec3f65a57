#!/usr/bin/env bash
# make image-check: builds deploy/images/Dockerfile's `worker` and `services` targets with
# podman on a Debian bookworm base made here by mmdebstrap (no image registry is reachable),
# then completes a real job in the worker image running as its non-root user against a
# `tcoder up` stack on this host.
#
# Podman's storage is under target/podman/ (scripts/podman-env.sh). Needs root or sudo for
# apt-get the first time.
set -euo pipefail

check=image-check
. "$(dirname "${BASH_SOURCE[0]}")/podman-env.sh"
work="$root/target/image-check"
mkdir -p "$work"

started=$SECONDS
build_tcoder_images check
cd "$root"

say "checking the images: non-root user, no FFmpeg in services, nothing secret in the layers"
[ "$(podman image inspect -f '{{.Config.User}}' localhost/tcoder-worker:check)" = "10001:10001" ] \
  || die "the worker image does not run as 10001"
podman run --rm --network none --entrypoint /usr/local/bin/tcoder localhost/tcoder-services:check --help >/dev/null \
  || die "the CLI does not run in the services image"
if podman run --rm --network none --entrypoint /usr/bin/ldd localhost/tcoder-services:check \
    /usr/local/bin/tcoder-ingest /usr/local/bin/tcoder-dispatcher /usr/local/bin/tcoder | grep -q libav; then
  die "a services binary links FFmpeg"
fi
for image in worker services; do
  history="$(podman history --no-trunc --format '{{.CreatedBy}}' "localhost/tcoder-$image:check")"
  if grep -qiE 'secret|password|token' <<<"$history"; then die "a $image layer mentions a secret: $history"; fi
done

say "starting a tcoder up stack (no workers of its own) and the worker image against it"
data="$work/stack"
rm -rf "$data"
mkdir -p "$data"
export TCODER__UP__DATA_DIR="$data" TCODER_PROFILE="$data/cli.toml"
TCODER__DISPATCHER__PROVIDER=none ./target/release/tcoder up >"$work/up.log" 2>&1 &
up_pid=$!
worker=""
cleanup() {
  [ -n "$worker" ] && podman rm -f "$worker" >/dev/null 2>&1 || true
  kill -INT "$up_pid" 2>/dev/null || true
  wait "$up_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 120); do grep -q "admin endpoints" "$work/up.log" && break; sleep 0.5; done
grep -q "admin endpoints" "$work/up.log" || die "tcoder up did not start: $(tail -5 "$work/up.log")"
nats="$(grep -E '^  nats +nats://' "$work/up.log" | awk '{print $2}')"
redis="$(grep -E '^  redis ' "$work/up.log" | awk '{print $2}')"
store="$(grep -E '^  object store ' "$work/up.log" | awk '{print $3}')"
password() { awk -v s="$1" '$1 == s {print $2}' "$data/control-plane-passwords"; }
credentials="$(cat "$data/s3-credentials")"
admin="127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
worker="$(podman run -d --network host \
  -e TCODER__NATS__URL="$nats" -e TCODER__NATS__USER=worker -e TCODER__NATS__PASSWORD="$(password worker)" \
  -e TCODER__REDIS__URL="redis://worker:$(password worker)@${redis#redis://}" \
  -e TCODER__S3__ENDPOINT="$store" -e TCODER__S3__FORCE_PATH_STYLE=true \
  -e TCODER__S3__ACCESS_KEY_ID="${credentials%%:*}" -e TCODER__S3__SECRET_ACCESS_KEY="${credentials#*:}" \
  -e TCODER__ADMIN__BIND="$admin" -e TCODER__WORKER__IDLE_TIMEOUT=10m \
  localhost/tcoder-worker:check)"

clip="$work/clip.mp4"
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine=frequency=440 \
  -t 3 -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$clip"
say "submitting a job; only the container can run it"
summary="$(./target/release/tcoder submit "$clip" --preset hls --quality 144p --wait --json --timeout 3m)" \
  || die "the job did not complete: $(podman logs --tail 20 "$worker" 2>&1)"
grep -q '"status": *"completed"' <<<"$summary" || die "not completed: $summary"
id="$(sed -n 's/.*"id": *"\(job_[0-9a-f]*\)".*/\1/p' <<<"$summary" | head -1)"
podman logs "$worker" > "$work/worker.log" 2>&1 || true
uid="$(podman exec "$worker" /usr/bin/id -u)" || die "the worker container stopped: $(tail -20 "$work/worker.log")"
[ "$uid" = "10001" ] || die "the worker ran as uid $uid"
# Its admin server (host network) counts the job it completed; no other worker exists.
completed="$(curl -fsS "http://$admin/metrics" | awk '/^tcoder_worker_jobs_total\{.*outcome="completed"/ {s += $2} END {print s + 0}')"
[ "$completed" -ge 1 ] || die "the container's worker reports no completed job (admin $admin)"
sandbox="$(curl -fsS "http://$admin/metrics" | awk '/^tcoder_engine_sandbox_incomplete_total/ {print $2}')"
say "ok: job $id completed by the worker image as uid $uid (engine runs with an incomplete sandbox: ${sandbox:-0}; $((SECONDS - started)) s)"
