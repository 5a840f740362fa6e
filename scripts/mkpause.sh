#!/usr/bin/env bash
# Builds the pod sandbox ("pause") image lanternd's CRI pods use, from the tree: one
# static binary (tools/pause/pause.c) in an OCI image layout, reproducibly (fixed file
# list, owner 0, mtime 0, sorted tar, gzip without name or time), written as a tar that
# `ctr -n k8s.io images import` takes. Nothing can be pulled on these nodes.
#   scripts/mkpause.sh OUT.tar [NAME]     (NAME default docker.io/lantern/pause:1)
# Prints NAME (the drop-in's sandbox_image) on stdout.
set -euo pipefail
out=${1:?usage: mkpause.sh OUT.tar [NAME]}
name=${2:-docker.io/lantern/pause:1}
here=$(cd "$(dirname "$0")/.." && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root lay=$work/layout
mkdir -p "$root" "$lay/blobs/sha256"
${CC:-cc} -static -O2 -s -o "$root/pause" "$here/tools/pause/pause.c"
touch -d @0 "$root/pause" "$root"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
layer=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
lsize=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$lay/blobs/sha256/$layer"

printf '{"architecture":"amd64","config":{"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"},"created":"1970-01-01T00:00:00Z","os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
  "$diff_id" > "$work/config.json"
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
csize=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$lay/blobs/sha256/$config"
printf '{"config":{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.config.v1+json","size":%s},"layers":[{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":%s}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}' \
  "$config" "$csize" "$layer" "$lsize" > "$work/manifest.json"
manifest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
msize=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$lay/blobs/sha256/$manifest"
printf '{"imageLayoutVersion":"1.0.0"}' > "$lay/oci-layout"
printf '{"manifests":[{"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"},"digest":"sha256:%s","mediaType":"application/vnd.oci.image.manifest.v1+json","size":%s}],"schemaVersion":2}' \
  "$name" "${name##*:}" "$manifest" "$msize" > "$lay/index.json"
find "$lay" -exec touch -d @0 {} +
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$lay" -cf "$out" .
echo "$name"
