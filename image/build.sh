#!/usr/bin/env bash
# `make image`: regcast as an OCI image without a Docker daemon and without pulling a base image.
#   1. debootstrap a minimal Debian (minbase + python3), cached as a tar under $CACHE;
#   2. image/install.sh inside it (chroot): venv in /opt/regcast from the wheel, user regcast (10001);
#   3. buildah (vfs storage under $CACHE) commits the root filesystem with the image config below
#      and writes an oci-archive.
# Usage: image/build.sh VERSION WHEEL_DIR OUT.tar   (WHEEL_DIR: regcast's wheel and its dependencies')
set -euo pipefail
VERSION=$1 WHEELS=$2 OUT=$3
CACHE=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/regcast-image}   # kept across clones: debootstrap runs once
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=$CACHE/debian-$SUITE-minbase-python3.tar
mkdir -p "$CACHE" "$(dirname "$OUT")"
CACHE=$(cd "$CACHE" && pwd)
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'umount -l "$WORK/rootfs/proc" 2>/dev/null || true; rm -rf "$WORK"' EXIT
t0=$(date +%s)

if [ ! -f "$BASE" ]; then
    echo "debootstrap $SUITE (minbase + python3) from $MIRROR ..." >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$WORK/base" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    chroot "$WORK/base" apt-get clean
    rm -rf "$WORK/base/var/lib/apt/lists/"* "$WORK/base/var/cache/apt/"*
    tar -C "$WORK/base" --numeric-owner -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
    rm -rf "$WORK/base"
fi
t1=$(date +%s)

mkdir "$WORK/rootfs"
tar -C "$WORK/rootfs" --numeric-owner -xf "$BASE"
mkdir -p "$WORK/rootfs/tmp/build"
cp "$WHEELS"/*.whl image/install.sh "$WORK/rootfs/tmp/build/"
mount -t proc proc "$WORK/rootfs/proc"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$WORK/rootfs" /bin/sh /tmp/build/install.sh /tmp/build
umount "$WORK/rootfs/proc"
rm -rf "$WORK/rootfs/tmp/build"
tar -C "$WORK/rootfs" --numeric-owner -cf "$WORK/rootfs.tar" .
rm -rf "$WORK/rootfs"
t2=$(date +%s)

B=(buildah --storage-driver vfs --root "$CACHE/storage" --runroot "$CACHE/run")
ctr=$("${B[@]}" from scratch)
"${B[@]}" add "$ctr" "$WORK/rootfs.tar" / >/dev/null
"${B[@]}" config \
    --user 10001:10001 \
    --workingdir /var/lib/regcast \
    --env PATH=/opt/regcast/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env REGCAST_HOST=0.0.0.0 \
    --env PYTHONDONTWRITEBYTECODE=1 \
    --port 5001/tcp \
    --entrypoint '["regcast"]' \
    --cmd serve \
    --label org.opencontainers.image.title=regcast \
    --label "org.opencontainers.image.description=Copies container images from one registry to many over the registry HTTP API" \
    --label org.opencontainers.image.version="$VERSION" \
    --label org.opencontainers.image.revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --label org.opencontainers.image.created="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --label org.opencontainers.image.base.name="debian:$SUITE (debootstrap minbase)" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    "$ctr"
"${B[@]}" commit --quiet --format oci --disable-compression=false --rm "$ctr" "oci-archive:$OUT.tmp:regcast:$VERSION" >/dev/null
mv "$OUT.tmp" "$OUT"
"${B[@]}" rmi --all --force >/dev/null 2>&1 || true
t3=$(date +%s)
echo "image $OUT: $(du -h "$OUT" | cut -f1) (debootstrap $((t1 - t0))s, install $((t2 - t1))s, buildah $((t3 - t2))s)" >&2
