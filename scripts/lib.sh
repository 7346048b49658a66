# SPDX-License-Identifier: MIT
# Shared by scripts/demo and scripts/test: install what is missing, build.
# shellcheck shell=bash

# Debian 12 packages the build and the tests need.
MAINTD_PACKAGES=(
  gcc pkg-config meson ninja-build
  libsqlite3-dev libuv1-dev libyaml-dev libsystemd-dev
  python3 python3-pytest sqlite3
  python3-yaml      # reads the alerting rules in test_prometheus_contrib.py
  sqlite3-tools     # sqlite3_analyzer: the deep scan's figures are checked against it
  systemd           # systemd-journald, journalctl and systemd-analyze for the tests
  util-linux        # mount (tmpfs for the disk-full tests), setpriv
  procps            # /bin/kill, for the unit's ExecReload
  acl               # setfacl, for the tests of directories and configurations an ACL opens
  man-db groff-base # man --warnings, to check the man pages render cleanly
  valgrind          # the daemon and sqlite-maintctl under memcheck (test_valgrind.py)
  prometheus        # promtool: checks and unit-tests the alerting rules in contrib/prometheus, and the
                    # dashboard's PromQL (test_prometheus_contrib.py); ensure_packages starts no server
)

ensure_packages() {
  local missing=() p
  for p in "${MAINTD_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
    return 1
  fi
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No service may start while these install: prometheus, wanted for promtool
  # alone, would otherwise start a Prometheus server listening on port 9090 of
  # a machine others use (and scraping it). Debian's maintainer scripts start
  # services through invoke-rc.d and deb-systemd-invoke, and both ask
  # /usr/sbin/policy-rc.d first: exit status 101 is "action forbidden"
  # (README.policy-rc.d in init-system-helpers). A temporary one, only when
  # the system has none of its own (container images often ship one), removed
  # by a trap however the install ends; the subshell keeps the trap off the
  # caller's. It does not keep the unit from being enabled for the next boot.
  (
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ] && [ ! -L "$policy" ]; then
      trap 'rm -f "$policy"' EXIT
      trap 'exit 130' INT
      trap 'exit 143' TERM
      printf '#!/bin/sh\n# temporary, from sqlite-maintd scripts/lib.sh: no service starts during its apt-get install\nexit 101\n' >"$policy"
      chmod 0755 "$policy"
    fi
    apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  )
}

# build DIR [meson options...]: configure once, then build.
build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log" >&2; return 1; }
  fi
  ninja -C "$dir" >"$dir.build.log" 2>&1 || { cat "$dir.build.log" >&2; return 1; }
  # A warning is a failure here; werror is on, but say so plainly too.
  if grep -q 'warning:' "$dir.build.log"; then
    grep 'warning:' "$dir.build.log" >&2
    return 1
  fi
}
