#!/usr/bin/env bash
# Builds the disk-boot variant of Godwit's test guest: a raw disk image that SeaBIOS boots
# through SYSLINUX into the same kernel and initramfs as the kernel-boot image.
#
# Usage: scripts/build-guest-disk.sh OUT_DIR   (scripts/build-guest.sh calls it last)
#
# Reads from OUT_DIR (written by scripts/build-guest.sh):
#   vmlinuz, initrd.img, cmdline
# Writes to OUT_DIR:
#   disk.raw           a 64 MiB (GODWIT_GUEST_DISK_MIB) FAT "superfloppy": no partition
#                      table, the FAT file system starts at sector 0 and SYSLINUX's boot
#                      sector is the disk's boot sector (SeaBIOS boots it as a hard disk).
#                      Files: ldlinux.sys, ldlinux.c32, vmlinuz, initrd.img, syslinux.cfg
#                      (SERIAL 0 115200, so the bootloader prints its banner on ttyS0;
#                      APPEND holds the contents of cmdline). Tests change the command line
#                      of a copy with guest.SetBootCmdline (mtools, no loop mount).
#   disk.VERSION       hash of the inputs (vmlinuz, initrd.img, cmdline, this script, the
#                      image size and the SYSLINUX version); disk.raw is rebuilt only when
#                      it would change (same inputs: exits at once)
#
# Needs: syslinux, mtools (mcopy), dosfstools (mkfs.vfat), sha256sum, truncate. Everything
# works on the image file itself: no loop devices, no mounts.
set -euo pipefail

die() { echo "build-guest-disk: error: $*" >&2; exit 1; }
log() { echo "build-guest-disk: $*"; }

[ $# -eq 1 ] || die "usage: $0 OUT_DIR"
OUT=$1
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
SIZE_MIB=${GODWIT_GUEST_DISK_MIB:-64}
LABEL=GODWIT
# A fixed volume serial number (mkfs.vfat would pick a random one).
VOLUME_ID=60D71A0B

for c in syslinux mcopy mdir mkfs.vfat sha256sum truncate; do
  command -v "$c" >/dev/null 2>&1 || die "'$c' is missing (run 'make deps')"
done
case "$SIZE_MIB" in '' | *[!0-9]*) die "GODWIT_GUEST_DISK_MIB must be a number of MiB, not '$SIZE_MIB'" ;; esac
for f in vmlinuz initrd.img cmdline; do
  [ -s "$OUT/$f" ] || die "$OUT/$f is missing or empty (scripts/build-guest.sh $OUT writes it)"
done
CMDLINE=$(cat "$OUT/cmdline")
case "$CMDLINE" in *$'\n'* | *$'\r'*) die "$OUT/cmdline has more than one line" ;; esac

# mtools: no ~/.mtoolsrc, and no refusal of images whose FAT geometry it finds odd.
export MTOOLSRC=/dev/null MTOOLS_SKIP_CHECK=1

# --- Up to date? ------------------------------------------------------------------------

inputs_hash() {
  {
    (cd "$OUT" && sha256sum vmlinuz initrd.img cmdline)
    sha256sum "$SELF" | cut -d' ' -f1
    echo "size=$SIZE_MIB"
    syslinux --version 2>&1 | head -n1
  } | sha256sum | cut -c1-16
}
HASH=$(inputs_hash) || die "cannot hash the inputs in $OUT"
STAMP="disk=$HASH size=${SIZE_MIB}MiB"
if [ -s "$OUT/disk.raw" ] && [ -f "$OUT/disk.VERSION" ] && [ "$(cat "$OUT/disk.VERSION")" = "$STAMP" ] &&
  [ "$(stat -c %s "$OUT/disk.raw")" -eq $((SIZE_MIB << 20)) ]; then
  log "$OUT/disk.raw is up to date ($HASH)"
  exit 0
fi

# --- Build ------------------------------------------------------------------------------

need=$(($(stat -c %s "$OUT/vmlinuz") + $(stat -c %s "$OUT/initrd.img") + (1 << 20)))
[ "$need" -lt $((SIZE_MIB << 20)) ] ||
  die "vmlinuz and initrd.img need $((need >> 20)) MiB, more than the ${SIZE_MIB} MiB image; raise GODWIT_GUEST_DISK_MIB"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/godwit-guest-disk.XXXXXX")
IMG=""
trap 'rm -rf "$TMP"; [ -z "$IMG" ] || rm -f "$IMG"' EXIT
IMG=$(mktemp "$OUT/.disk.raw.XXXXXX") || die "cannot write to $OUT"

chmod 644 "$IMG" && truncate -s "${SIZE_MIB}M" "$IMG" || die "cannot size $IMG"
mkfs.vfat -n "$LABEL" -i "$VOLUME_ID" "$IMG" >"$TMP/mkfs.log" 2>&1 ||
  die "mkfs.vfat failed: $(cat "$TMP/mkfs.log")"
# syslinux writes its boot sector and ldlinux.sys/ldlinux.c32 into the image through mtools.
syslinux --install "$IMG" >"$TMP/syslinux.log" 2>&1 ||
  die "syslinux --install failed: $(cat "$TMP/syslinux.log")"

# SERIAL must be the first directive. PROMPT 0 with a DEFAULT boots at once.
cat >"$TMP/syslinux.cfg" <<CFG
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT linux
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND $CMDLINE
CFG
mcopy -i "$IMG" "$OUT/vmlinuz" "$OUT/initrd.img" "$TMP/syslinux.cfg" :: >"$TMP/mcopy.log" 2>&1 ||
  die "mcopy into $IMG failed: $(cat "$TMP/mcopy.log")"
files=$(mdir -a -b -i "$IMG" ::) || die "mdir $IMG failed"
for f in ldlinux.sys ldlinux.c32 vmlinuz initrd.img syslinux.cfg; do
  grep -qix "::/$f" <<<"$files" || die "$f is missing from the image after the build (mdir shows: $files)"
done

# --- Install (disk.VERSION last, so an interrupted build never looks current) -------------

rm -f "$OUT/disk.VERSION"
mv -f "$IMG" "$OUT/disk.raw" || die "cannot move the image to $OUT/disk.raw"
IMG=""
echo "$STAMP" >"$OUT/.disk.VERSION.tmp" && mv -f "$OUT/.disk.VERSION.tmp" "$OUT/disk.VERSION"
log "wrote $OUT/disk.raw (${SIZE_MIB} MiB, FAT + SYSLINUX, $HASH)"
