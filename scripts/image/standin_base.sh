#!/usr/bin/env bash
# Builds a stand-in for the `python:3.11-slim` image from Debian packages and tags it with that name in podman, for
# machines that reach Debian's mirror and PyPI but no container registry (like ours).
#
# What it is: a debootstrap (minbase) of Debian bookworm with python3 (3.11), python3-venv and python3-pip, the PEP 668
# marker removed (pip may install system-wide, as in the real image), `python` and `pip` on PATH, LANG=C.UTF-8 and
# CMD python3. What differs from the real image: Python is Debian's 3.11.2 in /usr/bin (the real one builds 3.11.x
# into /usr/local), pip is Debian's 23.0, and the base weighs 183 MB instead of about 130 MB (Debian's minbase and
# python3 packages). A Dockerfile that only uses `python`, `pip` and `python -m venv` sees no difference.
#
# The root filesystem is cached as a tarball under IMAGE_WORK (default image-work/, gitignored), keyed by its
# RECIPE: a second run only re-imports it when podman lost the image, and does nothing when it has it.
# Usage: scripts/image/standin_base.sh [TAG]    (TAG defaults to python:3.11-slim)
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${1:-python:3.11-slim}"
IMAGE_WORK="${IMAGE_WORK:-image-work}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,python3-pip,ca-certificates"
# What the cached base is made of: changing it (suite, variant, packages, the steps below) needs a new RECIPE version.
RECIPE="bookworm minbase $PACKAGES no-pep668 python-pip-links no-docs v1"
KEY="$(printf %s "$RECIPE" | sha256sum | cut -c1-12)"
TARBALL="$IMAGE_WORK/base/bookworm-python3-$KEY.tar"
LABEL="ortserve.standin-base=$KEY"

if [ "$(podman image inspect --format '{{index .Labels "ortserve.standin-base"}}' "$TAG" 2>/dev/null)" = "$KEY" ]; then
  echo "standin_base: $TAG is the cached stand-in ($KEY)"
  exit 0
fi
if podman image exists "$TAG" && [ -z "$(podman image inspect --format '{{index .Labels "ortserve.standin-base"}}' "$TAG")" ]; then
  echo "standin_base: $TAG exists and is not a stand-in (a real base image): kept"
  exit 0
fi

if [ ! -s "$TARBALL" ]; then
  mkdir -p "$IMAGE_WORK/base"
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/ortserve-standin-XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  echo "standin_base: debootstrap bookworm into $rootfs (a few minutes, once)"
  debootstrap --variant=minbase --include="$PACKAGES" \
    bookworm "$rootfs" "$MIRROR" >"$IMAGE_WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$IMAGE_WORK/debootstrap.log"; echo "standin_base: debootstrap failed (log: $IMAGE_WORK/debootstrap.log)"; exit 1; }
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf python3 "$rootfs/usr/bin/python"
  ln -sf pip3 "$rootfs/usr/bin/pip"
  # What the real slim image leaves out: apt lists and caches, docs and man pages.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  mkdir -p "$IMAGE_WORK/base"
  tar -C "$rootfs" --numeric-owner -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
  find "$IMAGE_WORK/base" -name 'bookworm-python3-*.tar' ! -name "$(basename "$TARBALL")" -delete  # older recipes
  rm -f "$IMAGE_WORK/debootstrap.log"
fi
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL $LABEL" \
  "$TARBALL" "$TAG" >/dev/null
echo "standin_base: imported $TARBALL as $TAG"
