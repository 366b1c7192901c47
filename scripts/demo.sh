#!/usr/bin/env bash
# Builds moat and shows it at work: a command sandboxed in a container
# (Landlock, seccomp, dropped identity), allowed and denied, and the policy
# engine deciding real connections and requests against the example
# policies, with the reasons the sandbox's proxy logs. Run as root on
# Debian 12 with Go at /usr/local/go; it installs the few packages it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
need=()
for p in make gcc pkg-config libseccomp-dev busybox-static; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
make -s build >/dev/null
moat=$PWD/bin/moat

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || printf '(exit %d)\n' $?; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== A container sandboxed by moat: busybox, run as the policy's user under Landlock and seccomp"
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,home/sandbox,opt,sandbox}
cp /bin/busybox "$rootfs/bin/"
for a in $("$rootfs/bin/busybox" --list); do [ -e "$rootfs/bin/$a" ] || ln -s busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000::/home/sandbox:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nsandbox:x:1000:\n' > "$rootfs/etc/group"
chown 1000:1000 "$rootfs/home/sandbox" "$rootfs/sandbox"; chmod 1777 "$rootfs/tmp"
echo "not for the agent" > "$rootfs/opt/secret"
(cd "$work/bundle" && $moat spec)
cat > "$rootfs/bin/demo.sh" <<'SH'
id
echo hi > /sandbox/notes && echo "write /sandbox (read_write in the policy): allowed"
touch /home/sandbox/x 2>&1 | sed 's/^/write to its own home (not in the policy): /'
cat /opt/secret 2>&1 | sed 's/^/read \/opt\/secret (not in the policy): /'
unshare -U true 2>&1 | sed 's/^/create a user namespace (moat seccomp filter): /'
SH
sed -i -e 's/"readonly": true/"readonly": false/' -e 's|"sh"$|"sh", "/bin/demo.sh"|' -e 's/"terminal": true/"terminal": false/' "$work/bundle/config.json"
cat > "$work/policy.yaml" <<'YAML'
version: 1
filesystem_policy:
  read_only: [/bin, /etc, /proc]
  read_write: [/sandbox, /tmp]
process: { run_as_user: sandbox }
YAML
printf 'sandbox: on\nstate_dir: %s\n' "$work/state" > "$work/config.yaml"
step $moat --root "$work/root" --config "$work/config.yaml" --policy "$work/policy.yaml" run --bundle "$work/bundle" moat-demo-$$

echo; echo "== Every example policy is valid"
step $moat policy validate examples/policies/*.yaml

echo; echo "== Claude Code: node may reach Anthropic's API; curl may not; node may not reach other hosts"
step $moat policy check examples/policies/claude-code.yaml --binary /usr/bin/node --host api.anthropic.com --port 443
step $moat policy check examples/policies/claude-code.yaml --binary /usr/bin/curl --ancestor /bin/bash --host api.anthropic.com --port 443
step $moat policy check examples/policies/claude-code.yaml --binary /usr/bin/node --host exfil.example.net --port 443

echo; echo "== git over HTTPS, read-only: fetch allowed, push denied (L7 rules on the terminated TLS stream)"
step $moat policy check examples/policies/git-readonly.yaml --binary /usr/lib/git-core/git-remote-https --ancestor /usr/bin/git \
	--host github.com --port 443 --method GET --path '/moat/moat.git/info/refs?service=git-upload-pack'
step $moat policy check examples/policies/git-readonly.yaml --binary /usr/lib/git-core/git-remote-https --ancestor /usr/bin/git \
	--host github.com --port 443 --method POST --path /moat/moat.git/git-receive-pack --json

echo; echo "== A broken policy is refused with every error, located"
bad=$work/broken.yaml
cat > "$bad" <<'YAML'
version: 1
network_policies:
  api:
    endpoints:
      - { host: "*.com", port: 443 }
      - { host: api.example.com, port: 443, ports: [8443] }
    binaries:
      - { path: curl }
YAML
step $moat policy validate "$bad"
