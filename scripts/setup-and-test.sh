#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian 12 machine, then runs
# `make test`. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

# Packages the tests need: the build (make, git, gcc and libseccomp-dev for
# moat's cgo and seccomp support), the container engines moat is tested
# under (runc, containerd 1.6, Docker 20.10), busybox for the test rootfs,
# jq and umoci for images, iptables for dockerd and the CNI plugins, and
# the CNI plugins (/usr/lib/cni) for the nerdctl and CRI pod tests.
# Installed only when missing, so reruns are fast.
pkgs=(make git gcc pkg-config libseccomp-dev runc containerd docker.io busybox-static debootstrap umoci jq iptables file containernetworking-plugins)
need=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${need[@]}"
fi
go version
go mod download
# The runtime-tools validation suite (pinned), cached outside the tree.
./scripts/build-runtime-tools.sh >/dev/null
# crictl and nerdctl (pinned; not in Debian), cached beside it, where the
# CRI and nerdctl end-to-end tests find them.
./scripts/build-engine-tools.sh >/dev/null
make test
