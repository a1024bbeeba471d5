#!/usr/bin/env bash
# Builds Godwit's bootable test guest: Debian's cloud kernel and an initramfs holding
# busybox, the kernel modules the guest needs (virtio PCI/net/blk, ACPI power button,
# evdev) and the guest program (cmd/godwit-guest, package internal/guest).
#
# Usage: scripts/build-guest.sh OUT_DIR        (make guest runs it with build/guest)
#
# Writes to OUT_DIR:
#   vmlinuz     the kernel
#   initrd.img  gzip'd newc cpio initramfs
#   cmdline     default kernel command line (the management server appends godwit.ip=...)
#   VERSION     kernel package + busybox package + hash of the guest sources; OUT_DIR is
#               rebuilt only when this would change (same inputs: exits at once)
#   disk.raw    the same kernel and initramfs on a bootable disk (SYSLINUX), and
#   disk.VERSION  its own cache stamp: written by scripts/build-guest-disk.sh, run last
#               (also when the rest is up to date; it rebuilds only when its inputs changed)
#
# Downloaded .deb files are kept in /var/cache/godwit/guest (GODWIT_GUEST_CACHE) and
# reused. Needs: apt-get/apt-cache, dpkg-deb, go, cpio, gzip, modinfo (kmod); xz or zstd
# only if the kernel's modules are compressed. Root is needed to download packages into
# the cache the first time.
set -euo pipefail

die() { echo "build-guest: error: $*" >&2; exit 1; }
log() { echo "build-guest: $*"; }

[ $# -eq 1 ] || die "usage: $0 OUT_DIR"
OUT=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${GODWIT_GUEST_CACHE:-/var/cache/godwit/guest}
KERNEL_META=linux-image-cloud-amd64
BUSYBOX_PKG=busybox-static
CMDLINE="console=ttyS0 quiet panic=-1"
# Modules to load; their dependencies are added from modinfo's depends= field.
ROOT_MODULES=(virtio_pci virtio_net virtio_blk button evdev)

for c in apt-cache apt-get dpkg-deb go cpio gzip modinfo sha256sum flock; do
  command -v "$c" >/dev/null 2>&1 || die "'$c' is missing (run 'make deps')"
done

# --- Resolve package versions ---------------------------------------------------------

# kernel_pkg prints the versioned package linux-image-cloud-amd64 depends on.
kernel_pkg() {
  apt-cache depends "$KERNEL_META" 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !found { print $2; found = 1 }'
}
# candidate PKG prints the version apt would install.
candidate() {
  apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" && !found { print $2; found = 1 }'
}

KPKG=$(kernel_pkg || true)
if [ -z "$KPKG" ] || [ -z "$(candidate "$BUSYBOX_PKG")" ]; then
  log "package lists do not know $KERNEL_META or $BUSYBOX_PKG; running apt-get update"
  apt-get update -qq || die "apt-get update failed (are you root? is the Debian archive reachable?)"
  KPKG=$(kernel_pkg || true)
fi
[ -n "$KPKG" ] || die "cannot resolve the kernel package behind $KERNEL_META (apt-cache depends $KERNEL_META)"
KVER=$(candidate "$KPKG")
BVER=$(candidate "$BUSYBOX_PKG")
[ -n "$KVER" ] || die "no installable version of $KPKG"
[ -n "$BVER" ] || die "no installable version of $BUSYBOX_PKG"

# --- Up to date? ------------------------------------------------------------------------

guest_hash() {
  cd "$ROOT"
  {
    find internal/guest cmd/godwit-guest -type f ! -name '*_test.go' ! -path '*/testdata/*' -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum scripts/build-guest.sh
    go env GOVERSION
    go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' ./cmd/godwit-guest | LC_ALL=C sort -u
  } | sha256sum | cut -c1-16
}
GHASH=$(guest_hash) || die "cannot hash the guest sources (does 'go list ./cmd/godwit-guest' work?)"
STAMP="kernel=$KPKG $KVER
busybox=$BUSYBOX_PKG $BVER
guest=$GHASH"

uptodate() {
  local f
  for f in vmlinuz initrd.img cmdline VERSION; do [ -s "$OUT/$f" ] || return 1; done
  [ "$(cat "$OUT/VERSION")" = "$STAMP" ]
}
# disk_image builds OUT_DIR/disk.raw from OUT_DIR's kernel, initramfs and cmdline (cached).
disk_image() {
  bash "$ROOT/scripts/build-guest-disk.sh" "$OUT" || die "building $OUT/disk.raw failed"
}
if uptodate; then
  log "$OUT is up to date ($KPKG $KVER, guest $GHASH)"
  disk_image
  exit 0
fi

# --- Download packages into the cache ---------------------------------------------------

mkdir -p "$CACHE" 2>/dev/null || die "cannot create $CACHE (run as root once, or set GODWIT_GUEST_CACHE)"
exec 9>"$CACHE/.lock" || die "cannot write $CACHE (run as root once, or set GODWIT_GUEST_CACHE)"
flock 9

# fetch PKG VERSION prints the path of the package's .deb in the cache, downloading it
# if needed. apt-get download names files PKG_VERSION_ARCH.deb with ':' as %3a.
fetch() {
  local pkg=$1 ver=$2 deb dl
  for deb in "$CACHE/${pkg}_${ver//:/%3a}_"*.deb; do
    if [ -f "$deb" ] && dpkg-deb --info "$deb" >/dev/null 2>&1; then
      echo "$deb"
      return 0
    fi
    rm -f "$deb"
  done
  dl=$(mktemp -d "$CACHE/.dl.XXXXXX")
  log "downloading $pkg=$ver into $CACHE" >&2
  if ! (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2); then
    rm -rf "$dl"
    die "apt-get download $pkg=$ver failed"
  fi
  for deb in "$dl"/*.deb; do
    [ -f "$deb" ] || { rm -rf "$dl"; die "apt-get download $pkg=$ver produced no .deb"; }
    mv -f "$deb" "$CACHE/"
    echo "$CACHE/$(basename "$deb")"
  done
  rm -rf "$dl"
}
KDEB=$(fetch "$KPKG" "$KVER")
BDEB=$(fetch "$BUSYBOX_PKG" "$BVER")
flock -u 9

# --- Unpack -----------------------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/godwit-guest.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/kernel" "$TMP/busybox" "$TMP/root"
dpkg-deb -x "$KDEB" "$TMP/kernel" || die "cannot unpack $KDEB"
dpkg-deb -x "$BDEB" "$TMP/busybox" || die "cannot unpack $BDEB"

mods=("$TMP"/kernel/lib/modules/*)
[ ${#mods[@]} -eq 1 ] && [ -d "${mods[0]}" ] || die "expected one lib/modules/<release> in $KDEB, found: ${mods[*]}"
MODDIR=${mods[0]}
KREL=$(basename "$MODDIR")
VMLINUZ="$TMP/kernel/boot/vmlinuz-$KREL"
[ -f "$VMLINUZ" ] || die "$KDEB has no boot/vmlinuz-$KREL"
BUSYBOX="$TMP/busybox/bin/busybox"
[ -x "$BUSYBOX" ] || die "$BDEB has no bin/busybox"

# --- Build the guest program -------------------------------------------------------------

log "building the guest program (guest $GHASH)"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath \
  -ldflags="-s -w -X github.com/godwit/godwit/internal/guest.Version=$GHASH" \
  -o "$TMP/root/godwit-guest" ./cmd/godwit-guest) || die "go build ./cmd/godwit-guest failed"

# --- Kernel modules -----------------------------------------------------------------------

# module_file NAME prints the module's file (names may use '-' or '_'); empty if absent.
module_file() {
  local n=$1
  local f
  for f in $(find "$MODDIR/kernel" -type f \( -name "$n.ko*" -o -name "${n//_/-}.ko*" \) | LC_ALL=C sort); do
    case "$f" in *.ko | *.ko.xz | *.ko.zst | *.ko.gz) echo "$f"; return 0 ;; esac
  done
}
# builtin NAME succeeds if the module is built into the kernel.
touch "$MODDIR/modules.builtin"
sed 's/-/_/g' "$MODDIR/modules.builtin" >"$TMP/builtin"
builtin() {
  grep -qE "/${1//-/_}\.ko$" "$TMP/builtin"
}

ORDER=()
declare -A STATE=() # 1 = visiting, 2 = done
visit() {
  local m=${1//-/_} f dep
  case "${STATE[$m]:-}" in
    2) return 0 ;;
    1) die "dependency cycle at module $m" ;;
  esac
  if builtin "$m"; then
    STATE[$m]=2
    return 0
  fi
  f=$(module_file "$m")
  [ -n "$f" ] || die "module $m is neither built into $KREL nor in $MODDIR/kernel"
  STATE[$m]=1
  local deps
  deps=$(modinfo -F depends "$f") || die "modinfo $f failed"
  for dep in ${deps//,/ }; do
    visit "$dep"
  done
  STATE[$m]=2
  ORDER+=("$m")
  mkdir -p "$TMP/root/lib/modules"
  case "$f" in
    *.ko) cp "$f" "$TMP/root/lib/modules/$m.ko" ;;
    *.ko.xz)
      command -v xz >/dev/null || die "$f is xz-compressed and xz is missing (apt-get install xz-utils)"
      xz -dc "$f" >"$TMP/root/lib/modules/$m.ko" ;;
    *.ko.zst)
      command -v zstd >/dev/null || die "$f is zstd-compressed and zstd is missing (apt-get install zstd)"
      zstd -qdc "$f" >"$TMP/root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$TMP/root/lib/modules/$m.ko" ;;
  esac
}
for m in "${ROOT_MODULES[@]}"; do visit "$m"; done
# Sanity check: every module's dependencies come before it.
for ((i = 0; i < ${#ORDER[@]}; i++)); do
  for dep in $(modinfo -F depends "$TMP/root/lib/modules/${ORDER[$i]}.ko" | tr , ' '); do
    dep=${dep//-/_}
    builtin "$dep" && continue
    ok=0
    for ((j = 0; j < i; j++)); do [ "${ORDER[$j]}" = "$dep" ] && ok=1; done
    [ $ok -eq 1 ] || die "module order is wrong: ${ORDER[$i]} needs $dep first"
  done
done
printf '%s\n' "${ORDER[@]}" >"$TMP/root/etc-modules"
log "kernel $KREL; modules in load order: ${ORDER[*]}"

# --- Initramfs ------------------------------------------------------------------------------

R="$TMP/root"
mkdir -p "$R/bin" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/root"
mv "$R/etc-modules" "$R/etc/godwit-modules"
ln -s bin "$R/sbin"
cp "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"
done
# The kernel's built-in initramfs has /dev/console already; add it in case it does not.
if [ "$(id -u)" -eq 0 ]; then mknod -m 600 "$R/dev/console" c 5 1; fi

cat >"$R/init" <<'INIT'
#!/bin/sh
# Godwit test guest init (generated by scripts/build-guest.sh).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done </etc/godwit-modules
exec /godwit-guest
echo "init: cannot exec /godwit-guest; sleeping forever"
while :; do sleep 3600; done
INIT
chmod 755 "$R/init" "$R/godwit-guest"

(cd "$R" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) |
  gzip -9n >"$TMP/initrd.img" || die "building the initramfs failed"

# --- Install into OUT_DIR (VERSION last, so an interrupted build never looks current) ----

mkdir -p "$OUT" || die "cannot create $OUT"
rm -f "$OUT/VERSION"
cp "$VMLINUZ" "$OUT/.vmlinuz.tmp" && mv -f "$OUT/.vmlinuz.tmp" "$OUT/vmlinuz"
cp "$TMP/initrd.img" "$OUT/.initrd.img.tmp" && mv -f "$OUT/.initrd.img.tmp" "$OUT/initrd.img"
echo "$CMDLINE" >"$OUT/.cmdline.tmp" && mv -f "$OUT/.cmdline.tmp" "$OUT/cmdline"
echo "$STAMP" >"$OUT/.VERSION.tmp" && mv -f "$OUT/.VERSION.tmp" "$OUT/VERSION"
log "wrote $OUT: vmlinuz ($KREL), initrd.img ($(du -k "$OUT/initrd.img" | cut -f1) KiB), cmdline, VERSION"
disk_image
