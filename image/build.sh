#!/usr/bin/env bash
# Builds the Custos appliance image: a hybrid BIOS/UEFI ISO and a UEFI disk image (raw and
# qcow2), with checksums and an SBOM, from Debian packages pinned in image/packages.lock and the
# release `custos` binary. Needs no loop devices, chroot or root: see docs/install.md.
#
#   image/build.sh [--update-lock]      (OUT=target/image by default)
#
# Reproducible: the same inputs (this tree, the pinned packages, the binary) give the same bytes.
# Every timestamp is SOURCE_DATE_EPOCH (default: the last commit's time).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMG=$ROOT/image
OUT=${OUT:-$ROOT/target/image}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=${CUSTOS_BIN:-$ROOT/target/release/custos}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
export TZ=UTC LC_ALL=C
umask 022

need() { command -v "$1" > /dev/null || { echo "image/build.sh: $1 is missing (apt-get install $2)" >&2; exit 2; }; }
need apt-get apt; need dpkg-deb dpkg; need cpio cpio; need modprobe kmod; need depmod kmod
need grub-mkimage grub-common; need xorriso xorriso
need mformat mtools; need mkfs.vfat dosfstools; need sfdisk fdisk; need qemu-img qemu-utils
need python3 python3
[ -d /usr/lib/grub/i386-pc ] || { echo "image/build.sh: grub-pc-bin is missing" >&2; exit 2; }
[ -d /usr/lib/grub/x86_64-efi ] || { echo "image/build.sh: grub-efi-amd64-bin is missing" >&2; exit 2; }

LOCK=$IMG/packages.lock
if [ "${1:-}" = --update-lock ]; then
    tmp=$(mktemp)
    grep '^#' "$LOCK" > "$tmp"
    kernel=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    for p in $kernel $(grep -v '^#' "$LOCK" | awk '$1 !~ /^linux-image-/ { print $1 }'); do
        v=$(apt-cache policy "$p" | awk '/Candidate:/ { print $2 }')
        [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "no candidate for $p" >&2; exit 1; }
        echo "$p $v" >> "$tmp"
    done
    mv "$tmp" "$LOCK"
    echo "rewrote $LOCK"
    exit 0
fi
[ -x "$BIN" ] || { echo "image/build.sh: $BIN is missing: cargo build --release --bin custos" >&2; exit 2; }

WORK=$OUT/work
rm -rf "$WORK"
mkdir -p "$WORK/debs" "$WORK/pkg" "$OUT"

echo "== Debian packages (pinned in image/packages.lock)"
grep -v '^#' "$LOCK" | while read -r name version; do
    [ -n "$name" ] || continue
    if ! (cd "$WORK/debs" && apt-get download -q "$name=$version" > /dev/null 2>&1); then
        echo "image/build.sh: $name=$version is not in the package archive (apt-get update first?)." >&2
        echo "If the archive moved on, run image/build.sh --update-lock and review the change." >&2
        exit 1
    fi
done
for deb in "$WORK"/debs/*.deb; do
    dpkg-deb -x "$deb" "$WORK/pkg/$(dpkg-deb -f "$deb" Package)"
done

R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,run,tmp,data,root}
chmod 0700 "$R/root"
chmod 1777 "$R/tmp"

echo "== kernel and modules"
KPKG=$(grep -v '^#' "$LOCK" | awk '$1 ~ /^linux-image-/ { print $1 }')
KVER=${KPKG#linux-image-}
K=$WORK/pkg/$KPKG
cp "$K/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
depmod -b "$K" "$KVER"
grep -v '^#' "$IMG/modules" | while read -r m; do
    [ -n "$m" ] || continue
    modprobe -d "$K" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | sort -u | while read -r ko; do
    rel=${ko#"$K"/}
    mkdir -p "$R/$(dirname "$rel")"
    cp "$ko" "$R/$rel"
done
cp "$K/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KVER/"
depmod -b "$R" "$KVER"
sed 's/^#.*//; /^$/d' "$IMG/modules" > "$WORK/modules.list"

echo "== userland: busybox, e2fsprogs, the C library, custos"
cp "$WORK/pkg/busybox-static/bin/busybox" "$R/bin/busybox"
for applet in $("$R/bin/busybox" --list-full); do
    [ -e "$R/$applet" ] || ln -s /bin/busybox "$R/$applet"
done
for tool in mke2fs e2fsck; do
    rm -f "$R/sbin/$tool"
    cp "$WORK/pkg/e2fsprogs/sbin/$tool" "$R/sbin/$tool"
done
mkdir -p "$R/lib/x86_64-linux-gnu"
for p in libc6 libgcc-s1 libext2fs2 libcom-err2 libblkid1 libuuid1; do
    find "$WORK/pkg/$p" -name '*.so*' \( -path '*/lib/x86_64-linux-gnu/*' -o -path '*/lib64/*' \) | while read -r f; do
        case "$f" in */lib64/*) dest=$R/lib64 ;; *) dest=$R/lib/x86_64-linux-gnu ;; esac
        cp -P "$f" "$dest/"
    done
done
# The C library's loader is found at /lib64 and libraries in /lib/x86_64-linux-gnu.
printf '/lib/x86_64-linux-gnu\n' > "$R/etc/ld.so.conf"
# The public CAs (Debian's ca-certificates, Mozilla's list) as the one bundle `custos` trusts for
# webhooks, e-mail and syslog over TLS, besides a configured ca_file.
mkdir -p "$R/etc/ssl/certs"
find "$WORK/pkg/ca-certificates/usr/share/ca-certificates/mozilla" -name '*.crt' | sort | xargs cat \
    > "$R/etc/ssl/certs/ca-certificates.crt"
objcopy --strip-debug "$BIN" "$R/usr/bin/custos"
chmod 0755 "$R/usr/bin/custos"

echo "== configuration"
cp -R "$IMG/rootfs/." "$R/"
cp "$WORK/modules.list" "$R/etc/custos/modules"
ln -sf /bin/busybox "$R/init"
# The public half of the key that signs updates (docs/updates.md).
if [ -n "${CUSTOS_UPDATE_PUB:-}" ]; then
    cp "$CUSTOS_UPDATE_PUB" "$R/etc/custos/update.pub"
else
    # A development key, kept across builds (and outside OUT) so that builds stay reproducible.
    # Releases name the vendor's key instead: CUSTOS_UPDATE_PUB=vendor.pub (docs/updates.md).
    DEV_KEY=${CUSTOS_DEV_UPDATE_KEY:-$ROOT/target/update-key/dev-update}
    mkdir -p "$(dirname "$DEV_KEY")"
    "$BIN" update keygen --out "$DEV_KEY" --if-missing > /dev/null
    cp "$DEV_KEY.pub" "$R/etc/custos/update.pub"
    echo "note: updates for this image must be signed with the development key $DEV_KEY.key"
fi
VERSION=$("$BIN" --version | awk '{ print $2 }')
printf 'NAME="Custos"\nVERSION="%s"\nKERNEL="%s"\n' "$VERSION" "$KVER" > "$R/etc/os-release"
chmod 0644 "$R/etc/passwd" "$R/etc/group"

echo "== initramfs"
find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$R" && find . -mindepth 1 -printf '%P\n' | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n > "$WORK/initrd.img"

echo "== boot loaders (GRUB, every module built in; no time stamps inside)"
MODS="normal search search_fs_file configfile linux boot echo test serial terminal gzio part_gpt part_msdos fat iso9660 all_video gfxterm"
printf 'search --no-floppy --file --set=root /boot/custos.id\nset prefix=($root)/boot/grub\n' > "$WORK/early.cfg"
mkdir -p "$WORK/iso/boot/grub/i386-pc"
# shellcheck disable=SC2086
grub-mkimage -d /usr/lib/grub/i386-pc -O i386-pc-eltorito -p /boot/grub -c "$WORK/early.cfg" \
    -o "$WORK/iso/boot/grub/i386-pc/eltorito.img" biosdisk $MODS
# shellcheck disable=SC2086
grub-mkimage -d /usr/lib/grub/x86_64-efi -O x86_64-efi -p /boot/grub -c "$WORK/early.cfg" \
    -o "$WORK/BOOTX64.EFI" $MODS
export MTOOLS_SKIP_CHECK=1
# fat_image FILE SIZE_KIB LABEL VOLUME_ID SOURCE_FILE:DEST...: a FAT file system whose every date
# is SOURCE_DATE_EPOCH (mtools stamps new directories with the time of day, so none are made:
# the tree is copied whole with -s and -m from a directory whose dates are pinned).
fat_image() {
    local img=$1 kib=$2 label=$3 id=$4 tree=$5
    rm -f "$img"
    mkfs.vfat -C -n "$label" -i "$id" --invariant "$img" "$kib" > /dev/null
    find "$tree" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    mcopy -s -m -i "$img" "$tree"/* ::/
}
EFITREE=$WORK/efitree
mkdir -p "$EFITREE/EFI/BOOT"
cp "$WORK/BOOTX64.EFI" "$EFITREE/EFI/BOOT/BOOTX64.EFI"

echo "== ISO (hybrid BIOS and UEFI)"
ISO=$WORK/iso
cp "$WORK/vmlinuz" "$WORK/initrd.img" "$ISO/boot/"
echo "custos $VERSION" > "$ISO/boot/custos.id"
cp "$IMG/grub.cfg" "$ISO/boot/grub/grub.cfg"
fat_image "$ISO/efi.img" 4096 CUSTOS-EFI 43555354 "$EFITREE"
find "$ISO" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
NAME=custos-$VERSION
rm -f "$OUT/$NAME.iso"
xorriso -as mkisofs -graft-points --modification-date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)" \
    -b boot/grub/i386-pc/eltorito.img -no-emul-boot -boot-load-size 4 -boot-info-table --grub2-boot-info \
    --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img \
    --efi-boot efi.img -efi-boot-part --efi-boot-image --protective-msdos-label \
    -V CUSTOS -o "$OUT/$NAME.iso" -r "$ISO" > "$WORK/xorriso.log" 2>&1 \
    || { cat "$WORK/xorriso.log" >&2; exit 1; }

echo "== UEFI disk image (GPT, one EFI system partition)"
ESP_MB=160
mkdir -p "$EFITREE/boot/grub"
cp "$WORK/vmlinuz" "$WORK/initrd.img" "$ISO/boot/custos.id" "$EFITREE/boot/"
cp "$IMG/grub.cfg" "$EFITREE/boot/grub/grub.cfg"
ESP=$WORK/esp.img
fat_image "$ESP" $((ESP_MB * 1024)) CUSTOS-EFI 43555355 "$EFITREE"
RAW=$OUT/$NAME-uefi.raw
rm -f "$RAW"
truncate -s $(((ESP_MB + 2) * 1024 * 1024)) "$RAW"
sfdisk -q --no-reread --no-tell-kernel "$RAW" <<SFDISK
label: gpt
label-id: 43555354-4F53-4150-5049-414E43450000
first-lba: 2048
start=2048, size=$((ESP_MB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=43555354-4F53-4546-4953-595354454D00, name="EFI system"
SFDISK
dd if="$ESP" of="$RAW" bs=1M seek=1 conv=notrunc status=none
rm -f "$OUT/$NAME-uefi.qcow2"
qemu-img convert -q -c -O qcow2 "$RAW" "$OUT/$NAME-uefi.qcow2"

echo "== SBOM and checksums"
# The crates compiled into the binary (normal dependencies, this target), with their licenses.
(cd "$ROOT" && cargo tree --locked --offline -e normal --target x86_64-unknown-linux-gnu \
    --prefix none -f '{p}|{l}') | sed 's/ (\/[^)]*)//; s/ (\*)$//' | sort -u > "$WORK/crates.txt"
python3 "$IMG/sbom.py" --version "$VERSION" --lock "$LOCK" --debs "$WORK/debs" \
    --cargo-lock "$ROOT/Cargo.lock" --tree "$WORK/crates.txt" --binary "$R/usr/bin/custos" \
    --out "$OUT/$NAME.spdx.json"
(cd "$OUT" && sha256sum "$NAME.iso" "$NAME-uefi.raw" "$NAME-uefi.qcow2" "$NAME.spdx.json" > "$NAME.SHA256SUMS")
ln -sf "$NAME.iso" "$OUT/custos.iso"
ln -sf "$NAME-uefi.qcow2" "$OUT/custos-uefi.qcow2"
ln -sf "$NAME-uefi.raw" "$OUT/custos-uefi.raw"
cat "$OUT/$NAME.SHA256SUMS"
