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
for p in make gcc pkg-config libseccomp-dev busybox-static iproute2; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
make -s build >/dev/null
moat=$PWD/bin/moat

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || printf '(exit %d)\n' $?; }

# Under /var/tmp: moat box gives the sandboxed command a private /tmp.
work=$(mktemp -d /var/tmp/moat-demo.XXXXXX)
chmod 755 "$work"
upns=moat-demo-up-$$
httpd_pid=
cleanup() {
	[ -n "$httpd_pid" ] && kill "$httpd_pid" 2>/dev/null
	ip netns del "$upns" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

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

echo; echo "== The network sandbox: a command's only way out is the sandbox's proxy, which decides by destination and binary"
# An upstream web server on a private address, in a network namespace of
# its own linked to this host.
ip netns add "$upns"
ip link add mdemo$$a type veth peer name mdemo$$b netns "$upns"
ip addr add 10.250.0.1/24 dev mdemo$$a && ip link set mdemo$$a up
ip -n "$upns" addr add 10.250.0.2/24 dev mdemo$$b && ip -n "$upns" link set mdemo$$b up
mkdir -p "$work/www" && echo "hello from the upstream server" > "$work/www/index.html"
ip netns exec "$upns" busybox httpd -f -p 10.250.0.2:8080 -h "$work/www" & httpd_pid=$!
cat > "$work/net-policy.yaml" <<'YAML'
version: 1
filesystem_policy:
  read_only: [/bin, /usr, /lib, /etc, /proc, /var/tmp]
  read_write: [/tmp]
network_policies:
  upstream:
    endpoints:
      - { host: 10.250.0.2, port: 8080, allowed_ips: [10.250.0.0/24] }
      - { host: 169.254.169.254, port: 80 }
    binaries:
      - { path: /usr/bin/busybox }   # /bin is /usr/bin on Debian 12
YAML
printf 'sandbox: on\nstate_dir: %s\nlog_dir: %s\n' "$work/state" "$work/logs" > "$work/config.yaml"
cat > "$work/net-demo.sh" <<'SH'
echo "proxy: $HTTP_PROXY"
echo "GET http://10.250.0.2:8080/ (allowed):"; busybox wget -q -O - http://10.250.0.2:8080/
echo "GET http://10.250.0.2:9999/ (port not in the policy):"; busybox wget -q -O - http://10.250.0.2:9999/ 2>&1; echo
echo "GET http://169.254.169.254/ (cloud metadata, listed but refused by the SSRF guard):"; busybox wget -q -O - http://169.254.169.254/ 2>&1; echo
echo "direct connection, ignoring the proxy:"; busybox wget -Y off -q -O - http://10.250.0.2:8080/ 2>&1
echo "the same request from another binary (a copy of busybox):"; cp /usr/bin/busybox /tmp/wget; /tmp/wget -q -O - http://10.250.0.2:8080/ 2>&1
true
SH
step $moat --root "$work/root" --config "$work/config.yaml" box --id moat-demo-net-$$ --policy "$work/net-policy.yaml" -- sh "$work/net-demo.sh"
step $moat --config "$work/config.yaml" denials --all moat-demo-net-$$

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
