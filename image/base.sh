#!/usr/bin/env bash
# A local Debian bookworm base image with Python 3.11 in /usr/bin, for hosts that cannot pull
# the official python:3.11-slim-bookworm. Made once with debootstrap from the Debian mirror the
# host's apt uses, then reused: its tag is a hash of everything that goes into it (this script,
# the suite, the packages, the mirror). Prints only the tag on stdout.
set -euo pipefail
ENGINE=${ENGINE:-podman}
SUITE=bookworm
PACKAGES=python3-venv,python-is-python3
MIRROR=${DEBIAN_MIRROR:-$(
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | awk '/^URIs: *http.*\/debian$/ { print $2; exit } /^deb http.*\/debian / { print $2; exit }' \
        || true
)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
key=$(printf '%s\n' "$SUITE" "$PACKAGES" "$MIRROR" | cat - "$0" | sha256sum | cut -c1-16)
tag=localhost/hrs-base:$key
if "$ENGINE" image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag: cached" >&2
else
    command -v debootstrap >/dev/null || { echo "debootstrap missing: make image-tools" >&2; exit 1; }
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    started=$SECONDS
    echo "base image $tag: debootstrap $SUITE from $MIRROR" >&2
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
        || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
    rm -f "$root.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    tar --numeric-owner -C "$root" -c . \
        | "$ENGINE" import --quiet --change 'CMD ["python3"]' - "$tag" >/dev/null
    echo "base image $tag: made in $((SECONDS - started)) s" >&2
fi
echo "$tag"
