#!/usr/bin/env bash
# Installs what Godwit needs from Debian's package archive. Idempotent and quick when
# nothing is missing: it only touches apt when a command or a QEMU older than 10 is found.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: installing packages needs root; run 'sudo make deps' once" >&2
    exit 1
  fi
}

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
  local v
  v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n1)
  [ -n "$v" ] && [ "$v" -ge 10 ]
}

missing=()
for c in ip tc busybox cpio gzip qemu-img modinfo zstd syslinux mcopy mdir mkfs.vfat; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
[ -x /bin/busybox ] || missing+=("busybox-static")

if [ ${#missing[@]} -eq 0 ] && qemu_ok; then
  exit 0
fi

need_root
export DEBIAN_FRONTEND=noninteractive

# QEMU 10 comes from bookworm-backports: Debian 12's own 7.2 corrupts TCG guests once a
# migration needs a fourth dirty-sync pass (see ARCHITECTURE.md).
src=/etc/apt/sources.list.d/godwit-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat >"$src" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

echo "deps: installing packages (missing: ${missing[*]:-none}; qemu >= 10: $(qemu_ok && echo yes || echo no))"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  iproute2 busybox-static cpio gzip kmod zstd ca-certificates \
  syslinux mtools dosfstools >/dev/null
apt-get install -y -qq --no-install-recommends -t bookworm-backports \
  qemu-system-x86 qemu-utils >/dev/null
qemu_ok || { echo "deps: QEMU 10 did not install; check the bookworm-backports suite" >&2; exit 1; }
echo "deps: $(qemu-system-x86_64 --version | head -n1)"
