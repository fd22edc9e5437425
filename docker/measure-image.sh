#!/bin/sh
# Measures the runtime image of docker/Dockerfile where no Docker engine
# runs: rebuilds its runtime stage as a directory tree with debootstrap and
# prints each layer's size on disk and as a gzip-compressed tar (what a
# registry reports). A reconstruction, not a `docker build`:
#   - debootstrap's minbase stands in for debian:bookworm-slim; the same
#     tree with slim's dpkg path excludes (no docs but copyrights, no man
#     pages, no locales) is measured too;
#   - apt's lists and package cache are removed, as in the Dockerfile.
#
# Usage (as root; needs debootstrap and a Debian mirror, not the binary's build):
#   docker/measure-image.sh [BINARY]      # default target/release/rollcall
#   MIRROR=http://deb.debian.org/debian docker/measure-image.sh
set -eu

bin=${1:-target/release/rollcall}
mirror=${MIRROR:-http://deb.debian.org/debian}
[ -x "$bin" ] || { echo "no binary at $bin (build it with cargo build --release)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap and chroot)" >&2; exit 2; }

work=$(mktemp -d /tmp/rollcall-image.XXXXXX)
cleanup() {
    # debootstrap mounts /proc and /sys in the tree; never delete through them.
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount "$m"; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
root=$work/root

size() {
    disk=$(du -sb "$root" | cut -f1)
    gz=$(tar -C "$root" --numeric-owner -cf - . | gzip -n | wc -c)
    printf '%-44s %11s bytes on disk  %11s bytes tar.gz\n' "$1" "$disk" "$gz"
}
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive "$@" >>"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }; }
apt_clean() {
    in_root apt-get clean
    rm -rf "$root"/var/lib/apt/lists/*
}

debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
apt_clean
size "bookworm minbase"

# What debian:bookworm-slim leaves out (debuerreotype's slimify).
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/groff/* "$root"/usr/share/info/* "$root"/usr/share/linda/* \
    "$root"/usr/share/lintian/overrides/* "$root"/usr/share/locale/* "$root"/usr/share/man/*
size "  with slim's excludes"

# The Dockerfile's RUN.
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root apt-get update
in_root apt-get install -y --no-install-recommends ca-certificates curl
apt_clean
in_root useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin rollcall
mkdir -p "$root/data"
size "  + ca-certificates curl"

# The Dockerfile's COPY.
install -m 755 "$bin" "$root/usr/local/bin/rollcall"
size "  + rollcall (the image)"
bsize=$(stat -c %s "$bin")
bgz=$(gzip -nc "$bin" | wc -c)
printf '%-44s %11s bytes on disk  %11s bytes gzip\n' "the binary alone" "$bsize" "$bgz"
