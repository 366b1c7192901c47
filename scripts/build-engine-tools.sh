#!/usr/bin/env bash
# Builds the container-engine clients the end-to-end tests drive and Debian
# does not package: crictl (CRI, for the RuntimeClass-handler tests) and
# nerdctl (for the CNI bridge tests), at pinned versions, into a cache
# directory outside the repository. It prints the two binaries' paths as
# MOAT_CRICTL=... and MOAT_NERDCTL=... lines; the tests look there by
# default, so the variables are only needed for another cache directory.
# A second run with both built returns at once.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH

CRICTL_VERSION=v1.37.0
NERDCTL_VERSION=v2.1.2
CACHE=${MOAT_CI_CACHE:-/var/tmp/moat-ci}
CRICTL=$CACHE/crictl-$CRICTL_VERSION/crictl
NERDCTL=$CACHE/nerdctl-$NERDCTL_VERSION/nerdctl
mkdir -p "$CACHE"

# Each is built in a temporary directory and renamed into place: an
# interrupted build leaves no half-written binary that a later run would
# take as done.
tmp=
trap 'if [ -n "$tmp" ]; then rm -rf "$tmp"; fi' EXIT

if [ ! -x "$CRICTL" ]; then
	mkdir -p "$(dirname "$CRICTL")"
	tmp=$(mktemp -d "$CACHE/crictl-build.XXXXXX")
	GOBIN=$tmp go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >&2
	mv "$tmp/crictl" "$CRICTL"
	rm -rf "$tmp"
fi

# `go install nerdctl@version` fails through a filtered module proxy (its
# deprecation check reads @v/list, which is refused); a throwaway module
# that requires the pinned version builds it.
if [ ! -x "$NERDCTL" ]; then
	mkdir -p "$(dirname "$NERDCTL")"
	tmp=$(mktemp -d "$CACHE/nerdctl-build.XXXXXX")
	printf 'module nerdctlbuild\n\ngo 1.24\n' >"$tmp/go.mod"
	(cd "$tmp" && go get "github.com/containerd/nerdctl/v2/cmd/nerdctl@$NERDCTL_VERSION" >&2 &&
		go build -o "$tmp/nerdctl" github.com/containerd/nerdctl/v2/cmd/nerdctl >&2)
	mv "$tmp/nerdctl" "$NERDCTL"
	rm -rf "$tmp"
fi
echo "MOAT_CRICTL=$CRICTL"
echo "MOAT_NERDCTL=$NERDCTL"
