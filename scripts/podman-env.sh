# Sourced by scripts/image-check.sh and scripts/compose-check.sh: podman as this repository
# uses it here — installed from Debian when missing, its storage under target/podman/ (shared,
# so the base image and layers one check builds the other reuses), runc with cgroupfs and no
# default ulimits (crun cannot start containers on hybrid cgroup v1 hosts like CI's), netavark
# networks with DNS (aardvark-dns) so compose services find each other by name — and a Debian
# bookworm base image made by mmdebstrap, since no image registry is reachable. Needs root or
# sudo for apt-get the first time.
#
# Defines: $root, $podman_dir, podman (a function), say/die (prefixed with $check),
# ensure_base_image, build_tcoder_images <tag>.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
podman_dir="$root/target/podman"
say() { printf '%s: %s\n' "$check" "$*"; }
die() { printf '%s: ERROR: %s\n' "$check" "$*" >&2; exit 1; }

missing=()
for p in podman mmdebstrap runc uidmap netavark aardvark-dns iptables "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi

mkdir -p "$podman_dir"
cat > "$podman_dir/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[network]
network_backend = "netavark"
CONF
export CONTAINERS_CONF="$podman_dir/containers.conf"
# A wrapper, so tools that run `podman` themselves (podman-compose) use the same storage.
cat > "$podman_dir/podman" <<WRAPPER
#!/bin/sh
exec podman --root "$podman_dir/storage" --runroot "$podman_dir/run" "\$@"
WRAPPER
chmod +x "$podman_dir/podman"
podman() { "$podman_dir/podman" "$@"; }

base="localhost/tcoder-base:bookworm"
ensure_base_image() {
  if ! podman image exists "$base"; then
    say "making a Debian bookworm base with mmdebstrap"
    mmdebstrap --quiet --variant=minbase --include=passwd,ca-certificates bookworm "$podman_dir/rootfs.tar"
    podman import -q "$podman_dir/rootfs.tar" "$base" >/dev/null
    rm -f "$podman_dir/rootfs.tar"
  fi
}

# Builds the release binaries and deploy/images/Dockerfile's two targets on the base, tagged
# localhost/tcoder-worker:<tag> and localhost/tcoder-services:<tag>.
build_tcoder_images() {
  say "building release binaries (the CLI without the FFmpeg engine, as the services image has it)"
  (cd "$root" && cargo build --release -q -p tcoder-worker -p tcoder-ingest -p tcoder-dispatcher \
    && cargo build --release -q -p tcoder-cli --no-default-features)
  ensure_base_image
  for target in worker services; do
    say "building the $target image"
    (cd "$root" && podman build -q --network host --build-arg BASE="$base" --build-arg BINARIES=prebuilt \
      --target "$target" -t "localhost/tcoder-$target:$1" -f deploy/images/Dockerfile . >/dev/null)
  done
}
