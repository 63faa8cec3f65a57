#!/usr/bin/env bash
# make compose-check: brings deploy/compose/compose.yaml up with podman-compose (Debian's) from
# this clone — a three-node NATS cluster, Valkey, ingest, the dispatcher and a worker, each
# with its own identity from a .env make-env.sh writes — and completes a job submitted from
# this host with `tcoder submit`, through the published API and store ports.
#
# No image registry is reachable here, so the images compose names are made locally first:
# tcoder's from deploy/images/Dockerfile (as image-check builds them), and stand-ins tagged as
# the NATS and Valkey images the file pulls elsewhere — the same nats-server version the tests
# run, and Debian's Redis 7 behind a `valkey-server` name and a `docker-entrypoint.sh` that
# drops to its user, as Valkey's image has. With COMPOSE_PULL=1 (a machine with registry
# access) the real images are pulled instead. Prometheus and Grafana are not started (their
# images cannot be had here).
#
# The compose folder is copied under target/compose-check/ with its .env, so the clone stays
# clean; the stack runs as project `tcoder-check` on free ports and is removed (with its
# volumes) at the end, pass or fail.
set -euo pipefail

check=compose-check
. "$(dirname "${BASH_SOURCE[0]}")/podman-env.sh" podman-compose
work="$root/target/compose-check"
project=tcoder-check
started=$SECONDS

build_tcoder_images latest

nats_image="docker.io/library/nats:2.15.1"
valkey_image="docker.io/valkey/valkey:8.1.4"
grep -q "image: $nats_image" "$root/deploy/compose/compose.yaml" || die "compose.yaml names another NATS image"
grep -q "image: $valkey_image" "$root/deploy/compose/compose.yaml" || die "compose.yaml names another Valkey image"
if [ "${COMPOSE_PULL:-0}" = 1 ]; then
  podman pull -q "$nats_image" "$valkey_image" >/dev/null
else
  stand_ins="$work/stand-ins"
  rm -rf "$stand_ins" && mkdir -p "$stand_ins"
  if ! podman image exists "$nats_image"; then
    say "making a stand-in for $nats_image"
    cp "$(readlink -f "$root/.tools/bin/nats-server")" "$stand_ins/nats-server"
    "$stand_ins/nats-server" --version | grep -q "v${nats_image##*:}" \
      || die "the pinned nats-server is not ${nats_image##*:}"
    cat > "$stand_ins/nats.Containerfile" <<CONTAINERFILE
FROM $base
COPY nats-server /nats-server
ENTRYPOINT ["/nats-server"]
CONTAINERFILE
    podman build -q --network host -t "$nats_image" -f "$stand_ins/nats.Containerfile" "$stand_ins" >/dev/null
  fi
  if ! podman image exists "$valkey_image"; then
    say "making a stand-in for $valkey_image (Debian's redis-server)"
    cat > "$stand_ins/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
# As Valkey's image: the data folder is the server user's, and the server runs as that user.
set -e
chown -R redis:redis /data
exec setpriv --reuid=redis --regid=redis --init-groups "$@"
ENTRYPOINT
    cat > "$stand_ins/valkey.Containerfile" <<CONTAINERFILE
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* && ln -s /usr/bin/redis-server /usr/local/bin/valkey-server \\
 && mkdir /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod +x /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
CONTAINERFILE
    podman build -q --network host -t "$valkey_image" -f "$stand_ins/valkey.Containerfile" "$stand_ins" >/dev/null
  fi
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port="$(free_port)"
store_port="$(free_port)"
say "copying deploy/ and writing its .env (API on :$api_port, store on :$store_port)"
rm -rf "$work/deploy" && mkdir -p "$work"
cp -r "$root/deploy" "$work/deploy"
API_PORT="$api_port" STORE_PORT="$store_port" STORE_URL="http://localhost:$store_port" \
  sh "$work/deploy/compose/make-env.sh" >/dev/null
compose() {
  podman-compose --podman-path "$podman_dir/podman" -p "$project" \
    -f "$work/deploy/compose/compose.yaml" "$@"
}
services=(nats-1 nats-2 nats-3 redis ingest dispatcher worker)
cleanup() {
  for service in "${services[@]}"; do
    echo "== $service" && compose logs "$service" 2>&1 | tail -200
  done > "$work/stack.log" || true
  compose down -v > /dev/null 2>&1 || true
}
trap cleanup EXIT
compose down -v > /dev/null 2>&1 || true

say "starting nats-1..3, redis, ingest, dispatcher and a worker"
compose up -d "${services[@]}" > "$work/up.log" 2>&1 \
  || die "podman-compose up failed: $(tail -20 "$work/up.log")"
api="http://localhost:$api_port"
for _ in $(seq 1 120); do
  curl -fsS -o /dev/null "$api/openapi.json" 2>/dev/null && break
  sleep 1
done
curl -fsS -o /dev/null "$api/openapi.json" || die "the API did not answer on $api: $(compose logs ingest 2>&1 | tail -20)"

say "creating an API key as the operator (the cli Redis user, inside the ingest container)"
. "$work/deploy/compose/.env"
key=""
for _ in $(seq 1 30); do
  key="$(podman exec "${project}_ingest_1" env \
    "TCODER__REDIS__URL=redis://cli:$CLI_REDIS_PASSWORD@redis:6379/" \
    tcoder keys create --tenant compose 2>/dev/null | grep -o 'tk_[A-Za-z0-9_-]*' | head -1)" && [ -n "$key" ] && break
  sleep 1
done
[ -n "$key" ] || die "no API key: $(podman exec "${project}_ingest_1" env "TCODER__REDIS__URL=redis://cli:$CLI_REDIS_PASSWORD@redis:6379/" tcoder keys create --tenant compose 2>&1 | tail -5)"

clip="$work/clip.mp4"
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine=frequency=440 \
  -t 3 -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$clip"
say "submitting a job from this host"
summary="$("$root/target/release/tcoder" submit "$clip" --api "$api" --api-key "$key" \
  --preset hls --quality 144p --wait --json --timeout 5m)" \
  || die "the job did not complete: $(compose logs worker 2>&1 | tail -20)"
grep -q '"status": *"completed"' <<<"$summary" || die "not completed: $summary"
master="$(sed -n 's/.*"hls_master": *"\([^"]*\)".*/\1/p' <<<"$summary" | head -1)"
curl -fsS "$master" | grep -q "RESOLUTION=256x144" || die "the result is not served at $master"
id="$(sed -n 's/.*"id": *"\(job_[0-9a-f]*\)".*/\1/p' <<<"$summary" | head -1)"
say "ok: job $id completed by the compose stack, its playlist served at $master ($((SECONDS - started)) s)"
