#!/usr/bin/env bash
# make image-test: build the image with buildah (chroot isolation, no Docker engine) on a
# debootstrap-built Debian bookworm + Python 3.11 base (no registry is reachable for a
# python:3.11-slim base), report its size, and smoke-run check-config and the demo in it.
# Needs root and Debian's apt. Not part of `make test` (it takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
work=${IMAGE_TEST_DIR:-/tmp/retry-worker-image}
mkdir -p "$work"

command -v buildah >/dev/null && command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null
}

base=localhost/python-bookworm:3.11
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  rootfs="$work/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$rootfs"/. "$mnt"/
  buildah umount "$ctr"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd python3 "$ctr"
  buildah commit --quiet "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

ca=/etc/ssl/certs/ca-certificates.crt
build() {  # tag, extras; docker format keeps the HEALTHCHECK (OCI has none)
  buildah bud --quiet --format docker --layers=false --build-arg BASE="$base" \
    --build-arg EXTRAS="$2" --build-arg PIP_CERT=/run/pip-ca.crt \
    --volume "$ca:/run/pip-ca.crt:ro" -t "localhost/retry-worker:$1" . >"$work/build-$1.log"
}
build prod ""
build test demo
for image in localhost/retry-worker:prod localhost/retry-worker:test "$base"; do
  echo "$image: $(buildah images --format '{{.Size}}' "$image")"
done
buildah inspect --type image \
  --format '{{.Docker.Config.Healthcheck.Test}} user={{.Docker.Config.User}} stop={{.Docker.Config.StopSignal}}{{"\n"}}' \
  localhost/retry-worker:prod

ctr=$(buildah from localhost/retry-worker:test)
trap 'buildah rm "$ctr" >/dev/null' EXIT
buildah run "$ctr" -- retry-worker check-config --env production >/dev/null
echo "check-config --env production: ok"
buildah run "$ctr" -- retry-worker demo --duration 10 2>&1 | grep '^\[demo\] done'
