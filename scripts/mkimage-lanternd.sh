#!/usr/bin/env bash
# Builds the DaemonSet's image, lanternd's, reproducibly (the way scripts/mkimage.sh
# builds the test image: a fixed file list, owner 0, mtime 0, explicit modes, a sorted
# tar, gzip without a name or time, JSON written byte for byte): the same binaries give
# the same digest. It holds
#   /usr/bin/         lanternd, lantern, lantern-shim, lantern-wire, lantern-install,
#                     lantern-oci (when built)
#   /opt/lantern/bin/ runc, runsc (the path lanternd and the host agree on: lantern-install)
#   /usr/lib/cni/     the CNI plugins
#   /usr/lib/lantern/bpf/  the BPF objects (for bpftool audits; lanternd embeds its own)
# and exactly the shared libraries those programs load (their ELF dependencies, found
# with ldd, and the dynamic loader), the CA bundle, and a minimal /etc.
#   scripts/mkimage-lanternd.sh BUILD OUT [KUSTOMIZATION]
# Writes OUT/lanternd (an OCI image layout), OUT/lanternd.tar (the same as one archive:
# ctr import, skopeo copy oci-archive:) and OUT/digest; with KUSTOMIZATION, sets its
# images digest to the new one. Prints NAME@sha256:HEX.
set -euo pipefail
build=${1:?usage: mkimage-lanternd.sh BUILD OUT [KUSTOMIZATION]}
out=${2:?usage: mkimage-lanternd.sh BUILD OUT [KUSTOMIZATION]}
kust=${3:-}
here=$(cd "$(dirname "$0")/.." && pwd)
name=localhost/lantern/lanternd
version=$(sed -n 's/^#define LANTERN_VERSION "\(.*\)"$/\1/p' "$here/include/lantern/version.h")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root

put() { # SRC DEST MODE: a regular file with its content, whatever SRC links to
  install -D -m "$3" "$(readlink -f "$1")" "$root$2"
}

for b in lanternd lantern lantern-shim lantern-wire lantern-install; do
  put "$build/$b" "/usr/bin/$b" 0755
done
if [ -x "$build/lantern-oci" ]; then
  put "$build/lantern-oci" /usr/bin/lantern-oci 0755
else
  # the hook until the lantern-oci work is in the tree: lantern-install then refuses to
  # install anything, so no node advertises a RuntimeClass it cannot run
  echo "mkimage-lanternd: no $build/lantern-oci: the image has no runtime handler binary" >&2
fi
for r in runc runsc; do
  bin=$(command -v "$r" || true)
  [ -n "$bin" ] || { echo "mkimage-lanternd: $r is not installed (make deps)" >&2; exit 1; }
  put "$bin" "/opt/lantern/bin/$r" 0755
done
for p in /usr/lib/cni/*; do
  put "$p" "/usr/lib/cni/$(basename "$p")" 0755
done
for o in egress telemetry; do
  put "$build/bpf/$o.bpf.o" "/usr/lib/lantern/bpf/$o.bpf.o" 0644
done

# the shared libraries: every dependency ldd resolves for every ELF program above,
# at the path the loader looks for it, and the loader itself
libs=$(find "$root" -type f -perm -u+x | sort | while read -r f; do
  ldd "$f" 2>/dev/null | sed -n -e 's/.*=> \(\/[^ ]*\) .*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'
done | sort -u)
for l in $libs; do
  case $l in
    */ld-linux*) put "$l" "$l" 0755 ;;
    *) put "$l" "$l" 0644 ;;
  esac
done
put /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt 0644
mkdir -p "$root"/{tmp,proc,sys,dev,run/lantern,var/lib/lantern,etc/lantern}
printf 'root:x:0:0:root:/root:/usr/bin/lanternd\nnobody:x:65534:65534:nobody:/:/usr/bin/lanternd\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
find "$root" -type d -exec chmod 0755 {} +
find "$root/etc" -maxdepth 1 -type f -exec chmod 0644 {} +
chmod 1777 "$root/tmp"

layout=$out/lanternd
rm -rf "$layout"
mkdir -p "$layout/blobs/sha256"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -c "$work/layer.tar" > "$work/layer.tar.gz"
layer=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
lsize=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$layout/blobs/sha256/$layer"

printf '{"architecture":"amd64","config":{"Entrypoint":["/usr/bin/lanternd"],"Env":["PATH=/opt/lantern/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Labels":{"org.opencontainers.image.title":"lanternd","org.opencontainers.image.version":"%s"},"WorkingDir":"/"},"created":"1970-01-01T00:00:00Z","os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
  "$version" "$diff_id" > "$work/config.json"
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
csize=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$layout/blobs/sha256/$config"

printf '{"config":{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.config.v1+json","size":%s},"layers":[{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":%s}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}' \
  "$config" "$csize" "$layer" "$lsize" > "$work/manifest.json"
manifest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
msize=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$layout/blobs/sha256/$manifest"

printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"manifests":[{"annotations":{"io.containerd.image.name":"%s:%s","org.opencontainers.image.ref.name":"%s"},"digest":"sha256:%s","mediaType":"application/vnd.oci.image.manifest.v1+json","size":%s}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}' \
  "$name" "$version" "$version" "$manifest" "$msize" > "$layout/index.json"
find "$layout" -type d -exec chmod 0755 {} +
find "$layout" -type f -exec chmod 0644 {} +
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$layout" -cf "$out/lanternd.tar" \
  oci-layout index.json blobs
printf 'sha256:%s\n' "$manifest" > "$out/digest"
if [ -n "$kust" ]; then
  sed -i "s/^\(    digest: \)sha256:[0-9a-f]\{64\}$/\1sha256:$manifest/" "$kust"
fi
echo "$name@sha256:$manifest"
