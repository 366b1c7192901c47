#!/usr/bin/env bash
# Builds the OCI runtime-tools validation suite (pinned; @latest does not
# compile) into a cache directory outside the repository and prints that
# directory. A second run with the suite already built returns at once.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH

VERSION=v0.9.1-0.20251114084447-edf4cb3d2116
CACHE=${MOAT_CI_CACHE:-/var/tmp/moat-ci}
DEST=$CACHE/runtime-tools-${VERSION##*-}

if [ -x "$DEST/runtimetest" ] && [ -x "$DEST/validation/default/default.t" ]; then
	echo "$DEST"
	exit 0
fi
mkdir -p "$CACHE"
src=$(go mod download -json "github.com/opencontainers/runtime-tools@$VERSION" | jq -r .Dir)
tmp=$(mktemp -d "$CACHE/runtime-tools-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -r "$src/." "$tmp"
chmod -R u+w "$tmp"
# The module zip's vendor/ holds only modules.txt; build from the module cache.
rm -rf "$tmp/vendor"
make -C "$tmp" tool runtimetest COMMIT=ci >&2
make -C "$tmp" -j2 validation-executables COMMIT=ci >&2
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST"
