#!/usr/bin/env bash
# Builds a small OCI image layout from Debian's busybox-static, reproducibly: fixed
# file list, owner 0, mtime 0, sorted tar, gzip without a name or time, JSON written
# byte for byte. The same inputs always give the same manifest digest.
#   scripts/mkimage.sh OUT_DIR [NAME]      (NAME default lantern/busybox:1.35)
# IMAGE_USER=UID[:GID] in the environment sets the config's User (default: none, root).
# Prints the image reference NAME@sha256:HEX on stdout.
set -euo pipefail
out=${1:?usage: mkimage.sh OUT_DIR [NAME]}
name=${2:-lantern/busybox:1.35}
here=$(cd "$(dirname "$0")/.." && pwd)
bb=/bin/busybox
[ -x "$bb" ] || { echo "mkimage: $bb missing (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,run/lantern/secrets}
cp "$bb" "$root/bin/busybox"
for a in $("$bb" --list); do
  case $a in busybox) ;; *) ln -s busybox "$root/bin/$a" ;; esac
done
# the spawn benchmark's workload: prints a clock reading first thing
${CC:-cc} -static -O2 -o "$root/bin/lantern-clock" "$here/tools/image/clock.c"
# a harness API client for images (busybox cannot speak HTTP over a Unix socket)
${CC:-cc} -static -O2 -o "$root/bin/lantern-hcall" "$here/tools/image/hcall.c"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"

mkdir -p "$out/blobs/sha256"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
layer=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
lsize=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$out/blobs/sha256/$layer"

user=${IMAGE_USER:+\"User\":\"$IMAGE_USER\",}
printf '{"architecture":"amd64","config":{"Cmd":["/bin/sh"],"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],%s"WorkingDir":"/"},"created":"1970-01-01T00:00:00Z","os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
  "$user" "$diff_id" > "$work/config.json"
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
csize=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$out/blobs/sha256/$config"

printf '{"config":{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.config.v1+json","size":%s},"layers":[{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":%s}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}' \
  "$config" "$csize" "$layer" "$lsize" > "$work/manifest.json"
manifest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
msize=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$out/blobs/sha256/$manifest"

printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
printf '{"manifests":[{"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"},"digest":"sha256:%s","mediaType":"application/vnd.oci.image.manifest.v1+json","size":%s}],"schemaVersion":2}' \
  "$name" "${name##*:}" "$manifest" "$msize" > "$out/index.json"
echo "${name%:*}@sha256:$manifest"
