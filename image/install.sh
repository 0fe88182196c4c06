#!/bin/sh
# Installs regcast into a Debian root filesystem, as root inside it: the same steps for `make image`
# (debootstrap + chroot + buildah) and for the Containerfile (docker/podman), so both images hold
# the same files. $1: a folder holding the regcast wheel and the wheels of its dependencies
# (`pip wheel -w DIR .` outside): nothing is downloaded inside, no compiler is needed or shipped.
set -eu
WHEELS=${1:-/tmp/build}
export DEBIAN_FRONTEND=noninteractive
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates
fi
python3 -m venv /opt/regcast
/opt/regcast/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --find-links "$WHEELS" \
    --only-binary=:all: "$WHEELS"/regcast-*.whl
/opt/regcast/bin/pip uninstall -y -q pip
groupadd --system --gid 10001 regcast
useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/regcast --no-create-home --shell /usr/sbin/nologin regcast
install -d -o 10001 -g 10001 -m 0750 /var/lib/regcast
# no package manager cache, logs or docs in the layer
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/*.log /var/log/apt \
    /usr/share/doc/* /usr/share/man/* /usr/share/info/* /root/.cache /tmp/* 2>/dev/null || true
