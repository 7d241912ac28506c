#!/usr/bin/env bash
# ctest package_deb: builds the .deb from a configured and built build
# directory with cpack (which runs the install step itself) and checks its
# control data, contents, binaries, default config, maintainer scripts and
# systemd unit. Nothing is installed on this machine; all files go to a temp
# directory that is removed on exit.
#
#   bash tests/package/deb_test.sh BUILD_DIR
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
BUILD=$(cd "$1" && pwd)
CONFIG="$BUILD/CPackConfig.cmake"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/derpd-deb-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
die() {
  echo "FAIL: $*" >&2
  exit 1
}

# Runs a command with a time limit; its output goes to "$tmp/out.txt".
run() {
  timeout 30 "$@" >"$tmp/out.txt" 2>&1
}

[ -f "$CONFIG" ] || die "$CONFIG not found (configure the build directory first)"
version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$CONFIG")
[ -n "$version" ] || die "no CPACK_PACKAGE_VERSION in $CONFIG"

# --- 1. cpack -------------------------------------------------------------------
# -B: the staging tree and the package go to our own directory, so runs from
# several build directories (or this one twice) do not clash. umask 077: the
# package's modes must not depend on the umask of whoever builds it.
if ! (cd "$tmp" && umask 077 && timeout 240 cpack -G DEB --config "$CONFIG" -B "$tmp/out") >"$tmp/cpack.log" 2>&1; then
  cat "$tmp/cpack.log" >&2
  die "cpack failed (log above)"
fi
shopt -s nullglob
debs=("$tmp"/out/*.deb)
shopt -u nullglob
[ ${#debs[@]} -eq 1 ] || die "expected one .deb in the cpack output, found ${#debs[@]}: $(ls "$tmp/out")"
deb=${debs[0]}
arch=$(dpkg --print-architecture)
[ "$(basename "$deb")" = "derpd_${version}_${arch}.deb" ] ||
  fail "package file name $(basename "$deb"), want derpd_${version}_${arch}.deb (Debian convention)"
echo "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"

# --- 2. control data ----------------------------------------------------------------
dpkg-deb -I "$deb" >"$tmp/info.txt" || die "dpkg-deb -I failed"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = derpd ] || fail "Package is '$(field Package)', want derpd"
[ "$(field Version)" = "$version" ] || fail "Version is '$(field Version)', want $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture is '$(field Architecture)', want $arch"
[ "$(field Section)" = net ] || fail "Section is '$(field Section)', want net"
[ "$(field Priority)" = optional ] || fail "Priority is '$(field Priority)', want optional"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
[ -n "$(field Description)" ] || fail "no Description"
depends=$(field Depends)
[ -n "$depends" ] || fail "no Depends"
for dep in adduser libc6 libseccomp2; do
  grep -Eq "(^|, )$dep( |,|$)" <<<"$depends" || fail "Depends lacks $dep: $depends"
done

dpkg-deb -e "$deb" "$tmp/control" || die "dpkg-deb -e failed"
grep -qx /etc/derpd/derpd.conf "$tmp/control/conffiles" 2>/dev/null ||
  fail "DEBIAN/conffiles does not list /etc/derpd/derpd.conf"
for script in postinst prerm postrm; do
  if [ ! -x "$tmp/control/$script" ]; then
    fail "DEBIAN/$script missing or not executable"
    continue
  fi
  # --- 5. maintainer scripts parse ---
  sh -n "$tmp/control/$script" || fail "DEBIAN/$script: sh -n found a syntax error"
done

# --- 3. contents -----------------------------------------------------------------------
dpkg-deb -c "$deb" >"$tmp/contents.txt" || die "dpkg-deb -c failed"
# Column 1 is the mode, column 6 the path.
has() { awk -v p="$1" '$6 == p { found = 1 } END { exit !found }' "$tmp/contents.txt"; }
executable() { awk -v p="$1" '$6 == p && $1 ~ /^-rwxr-xr-x$/ { found = 1 } END { exit !found }' "$tmp/contents.txt"; }
for f in ./usr/sbin/derpd ./usr/lib/derpd/derp-worker; do
  executable "$f" || fail "package lacks $f (mode 0755)"
done
for f in ./etc/derpd/derpd.conf ./lib/systemd/system/derpd.service ./usr/share/doc/derpd/README.md; do
  has "$f" || fail "package lacks $f"
done
# Every role and tool the build made is packaged.
for role in derp-worker stun-worker cert-agent mesh-helper; do
  if [ -x "$BUILD/bin/$role" ]; then executable "./usr/lib/derpd/$role" || fail "package lacks ./usr/lib/derpd/$role"; fi
done
# The monitor role is derpd-probe under another name: a relative symlink.
if [ -x "$BUILD/bin/derpd-probe" ]; then
  awk '$6 == "./usr/lib/derpd/monitor" && $7 == "->" && $8 == "../../bin/derpd-probe" { found = 1 } END { exit !found }' \
    "$tmp/contents.txt" || fail "package lacks the link ./usr/lib/derpd/monitor -> ../../bin/derpd-probe"
fi
for tool in derpd-probe derpd-bench; do
  if [ -x "$BUILD/bin/$tool" ]; then executable "./usr/bin/$tool" || fail "package lacks ./usr/bin/$tool"; fi
done
bad_modes=$(awk '!($2 == "root/root" && ($1 == "drwxr-xr-x" || $1 == "-rw-r--r--" || $1 == "-rwxr-xr-x" ||
                 ($1 == "lrwxrwxrwx" && $6 == "./usr/lib/derpd/monitor")))' "$tmp/contents.txt")
[ -z "$bad_modes" ] || fail "entries not root-owned 0755/0644: $bad_modes"
if awk '$6 ~ /^\.\/var\/lib\/derpd/ { found = 1 } END { exit !found }' "$tmp/contents.txt"; then
  fail "package ships /var/lib/derpd (the postinst creates it)"
fi

# --- 4. the binaries run ------------------------------------------------------------
root="$tmp/root"
dpkg-deb -x "$deb" "$root" || die "dpkg-deb -x failed"
derpd="$root/usr/sbin/derpd"
worker="$root/usr/lib/derpd/derp-worker"
if [ -x "$derpd" ]; then
  if run "$derpd" --version; then
    grep -q "^derpd $version\( \|$\)" "$tmp/out.txt" || fail "derpd --version printed '$(cat "$tmp/out.txt")', want 'derpd $version ...'"
  else
    fail "derpd --version failed: $(cat "$tmp/out.txt")"
  fi
  if run "$derpd" --help; then
    grep -q -- "-hostname" "$tmp/out.txt" || fail "derpd --help does not mention -hostname"
    cp "$tmp/out.txt" "$tmp/help.txt"
  else
    fail "derpd --help failed: $(cat "$tmp/out.txt")"
  fi
fi
if [ -x "$worker" ]; then
  if run "$worker" --version; then
    grep -q "^derp-worker $version\( \|$\)" "$tmp/out.txt" ||
      fail "derp-worker --version printed '$(cat "$tmp/out.txt")', want 'derp-worker $version ...'"
  else
    fail "derp-worker --version failed: $(cat "$tmp/out.txt")"
  fi
fi

# --- the default config: every key, and derpd accepts it ---------------------------
conf="$root/etc/derpd/derpd.conf"
if [ -x "$derpd" ] && [ -f "$conf" ] && [ -f "$tmp/help.txt" ]; then
  # Settings are "# key = default" lines (exactly one space after '#').
  setting_re='^# [a-z][a-z0-9-]* =( |$)'
  keys=$(sed -n 's/^  -\([a-z][a-z0-9-]*\)\( .*\)\{0,1\}$/\1/p' "$tmp/help.txt" | grep -vx -e config -e version -e h || true)
  [ -n "$keys" ] || fail "no keys found in derpd --help"
  for k in $keys; do
    grep -q "^# $k =" "$conf" || fail "derpd.conf has no '# $k = ...' line for derpd's setting -$k"
  done
  # derpd reads the file before it checks the flags' values: a bad -http-port
  # is reported only when the whole file parsed.
  check_conf() {  # FILE WHAT
    if run "$derpd" --config "$1" -http-port=-2; then
      fail "$2: derpd exited 0 with -http-port=-2"
    elif ! grep -q -- "-http-port -2 out of range" "$tmp/out.txt"; then
      fail "$2 is not accepted by derpd: $(cat "$tmp/out.txt")"
    fi
  }
  check_conf "$conf" "the packaged derpd.conf"
  # The same with every setting uncommented: each shown default must parse.
  sed -E "s/^# ([a-z][a-z0-9-]*) =( |$)/\1 =\2/" "$conf" >"$tmp/uncommented.conf"
  n=$(grep -Ec "$setting_re" "$conf" || true)
  [ "$n" -eq "$(wc -w <<<"$keys")" ] ||
    fail "derpd.conf has $n '# key = value' lines, derpd --help lists $(wc -w <<<"$keys") keys (without config, version)"
  check_conf "$tmp/uncommented.conf" "derpd.conf with every setting uncommented"
fi

# --- 6. the systemd unit ------------------------------------------------------------
unit="$root/lib/systemd/system/derpd.service"
if [ -f "$unit" ]; then
  exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
  [ "$exec_start" = /usr/sbin/derpd ] || fail "unit ExecStart runs '$exec_start', want /usr/sbin/derpd"
  grep -q '^ExecStart=/usr/sbin/derpd --config /etc/derpd/derpd.conf$' "$unit" ||
    fail "unit ExecStart is not '/usr/sbin/derpd --config /etc/derpd/derpd.conf'"
  doc=$(sed -n 's|^Documentation=file:\(.*\)|\1|p' "$unit")
  [ -z "$doc" ] || has ".$doc" || fail "unit Documentation=file:$doc is not in the package"
  if command -v systemd-analyze >/dev/null 2>&1; then
    # verify needs ExecStart to exist: check a copy whose paths point into the
    # unpacked package (same unit name, so the same checks apply).
    mkdir -p "$tmp/unit"
    sed -e "s|/usr/sbin/derpd|$root/usr/sbin/derpd|" -e "s|/etc/derpd/derpd.conf|$conf|" \
      -e "s|file:/usr/share/doc|file:$root/usr/share/doc|" "$unit" >"$tmp/unit/derpd.service"
    if ! SYSTEMD_LOG_COLOR=0 timeout 60 systemd-analyze verify --man=no "$tmp/unit/derpd.service" >"$tmp/verify.txt" 2>&1; then
      fail "systemd-analyze verify rejected the unit: $(cat "$tmp/verify.txt")"
    elif grep -q "derpd.service" "$tmp/verify.txt"; then
      fail "systemd-analyze verify warned about the unit: $(grep "derpd.service" "$tmp/verify.txt")"
    else
      echo "systemd-analyze verify: unit OK"
    fi
    # For information only: systemd's own rating of the unit's hardening.
    timeout 60 systemd-analyze security --offline=yes "$tmp/unit/derpd.service" 2>/dev/null |
      grep "Overall exposure level" || true
  else
    echo "systemd-analyze not installed: skipping unit verification"
  fi
fi

if [ "$failures" -ne 0 ]; then
  echo "package_deb: $failures check(s) failed (package: $(basename "$deb"))" >&2
  exit 1
fi
echo "package_deb: all checks passed"
