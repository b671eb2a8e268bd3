#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine: the real clients
# the tarpits are tested against, and the Python test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> Debian package
declare -A NEED=(
  [ssh]=openssh-client [dbclient]=dropbear-bin [plink]=putty-tools [swaks]=swaks
  [chromium]=chromium [systemd-socket-activate]=systemd [prometheus]=prometheus
  [curl]=curl [wget]=wget [openssl]=openssl [ss]=iproute2 [setpriv]=util-linux
  [fail2ban-regex]=fail2ban [rsyslogd]=rsyslog [tmux]=tmux [endlessh]=endlessh
  [nft]=nftables [nc]=netcat-openbsd [unshare]=util-linux [ip]=iproute2
  [redis-cli]=redis-tools [mariadb]=mariadb-client [psql]=postgresql-client [patator]=patator
)
missing=()
for prog in "${!NEED[@]}"; do
  command -v "$prog" >/dev/null 2>&1 || missing+=("${NEED[$prog]}")
done
# The PostgreSQL server (the fleet tests start their own) is not on PATH on Debian.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
# patator's mysql_login and pgsql_login import these in Debian's python3
for mod in MySQLdb:python3-mysqldb psycopg2:python3-psycopg2; do
  /usr/bin/python3 -c "import ${mod%%:*}" 2>/dev/null || missing+=("${mod#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
"${PYTHON:-python3}" -m pip install -q --disable-pip-version-check -e ".[test]"
# The real attack tools of the gauntlet (bench/gauntlet.py, tests/test_gauntlet.py).
PYTHON="${PYTHON:-python3}" bash scripts/install-gauntlet-tools.sh
