#!/usr/bin/env bash
# Builds moat and shows it deciding real connections and requests against the
# example policies, allowed and denied, with the reasons the sandbox's proxy
# would log. Needs only Go (at /usr/local/go or in PATH) and make.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
command -v make >/dev/null || { apt-get update -q && apt-get install -y -q make; }
make -s build >/dev/null
moat=./bin/moat

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || printf '(exit %d)\n' $?; }

echo "== Every example policy is valid"
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
bad=$(mktemp --suffix=.yaml)
trap 'rm -f "$bad"' EXIT
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
