#!/bin/sh
# Installs the Debian packages a make target needs, only when one is missing.
# Usage: system-deps.sh test|bench|demo|venv
set -eu
case "${1:-test}" in
  test)  want="squid haproxy nginx libnginx-mod-stream dante-server publicsuffix systemd clickhouse-server" ;;
  bench) want="goaccess publicsuffix clickhouse-server" ;;
  demo)  want="publicsuffix" ;;
  venv)  want="python3-venv" ;;  # Debian's python3 has no ensurepip without it
  *) echo "usage: $0 test|bench|demo|venv" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing Debian packages:$missing (run as root, or install them yourself)" >&2
  exit 0
fi
echo "system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# policy-rc.d keeps the packages' own daemons from starting: tests start them as children.
# A policy-rc.d the host already has is put back afterwards, also when the install fails.
policy=${PROXYMETER_POLICY_RC_D:-/usr/sbin/policy-rc.d}  # another path only for its test
saved=""
if [ -e "$policy" ]; then saved="$policy.proxymeter-saved"; mv "$policy" "$saved"; fi
restore() { rm -f "$policy"; if [ -n "$saved" ]; then mv "$saved" "$policy"; fi; }
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
apt-get install -y -q --no-install-recommends $missing >/dev/null
