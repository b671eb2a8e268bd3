#!/usr/bin/env bash
# The real attack tools and clients that bench/gauntlet.py and tests/test_gauntlet.py
# run against tarry. Idempotent: installs only what is missing. Debian 12, as root
# (or with sudo). No tool is downloaded from anywhere but Debian and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

# program on PATH -> Debian package
declare -A NEED=(
  # SSH
  [patator]=patator [hydra]=hydra [medusa]=medusa [ncrack]=ncrack [nmap]=nmap
  [ssh-audit]=ssh-audit [ssh]=openssh-client [dbclient]=dropbear-bin [plink]=putty-tools
  # HTTP
  [dirb]=dirb [gobuster]=gobuster [ffuf]=ffuf [wfuzz]=wfuzz [dirsearch]=dirsearch
  [whatweb]=whatweb [sqlmap]=sqlmap [wapiti]=wapiti [wafw00f]=wafw00f
  [curl]=curl [wget]=wget [chromium]=chromium
  # SMTP
  [swaks]=swaks [sendemail]=sendemail
)
missing=()
for prog in "${!NEED[@]}"; do
  command -v "$prog" >/dev/null 2>&1 || missing+=("${NEED[$prog]}")
done
# A real MTA for the gauntlet to start on its own (never as a daemon): exim4. It
# is only installed where no other MTA owns /usr/sbin/sendmail, since Debian's
# MTAs conflict and installing exim would remove, say, postfix.
if ! command -v exim4 >/dev/null 2>&1 && ! command -v exim >/dev/null 2>&1; then
  if [ -e /usr/sbin/sendmail ]; then
    echo "install-gauntlet-tools: another MTA owns /usr/sbin/sendmail; not installing exim4" >&2
  else
    missing+=(exim4-daemon-light)
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  # Installing exim4 (or anything with a service) must not start a daemon: the
  # gauntlet runs its own. policy-rc.d is Debian's switch for that; keep one that exists.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_ tee "$policy" >/dev/null
    $sudo_ chmod 755 "$policy"
    made_policy=1
  fi
  trap '[ "$made_policy" -eq 0 ] || $sudo_ rm -f "$policy"' EXIT
  echo "installing Debian packages: ${missing[*]}"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq \
    -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

# PyPI: the SSH client libraries and an SMTP user enumerator not packaged by Debian.
py=("${PYTHON:-python3}")  # the project venv's, from make
py_missing=()
"${py[@]}" -c "import paramiko" 2>/dev/null || py_missing+=("paramiko>=3")
"${py[@]}" -c "import asyncssh" 2>/dev/null || py_missing+=("asyncssh>=2.14")
[ -x "$(dirname "$("${py[@]}" -c 'import sys; print(sys.executable)')")/smtp-user-enum" ] || command -v smtp-user-enum >/dev/null 2>&1 || py_missing+=("smtp-user-enum==0.7.0")
if [ ${#py_missing[@]} -gt 0 ]; then
  "${py[@]}" -m pip install -q --disable-pip-version-check "${py_missing[@]}"
fi
