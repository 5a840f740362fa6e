#!/usr/bin/env python3
"""hostile_image.py: crafted image archives for image_test, written into the test's
temporary directory. Every archive is built here, byte for byte, from the standard
library: tarfile writes names exactly as given ("../x", ".wh...", "/abs"), and the
gzip bombs are made without ever holding or compressing their expanded size.

  entries OUT.tar JSON              a tar of the JSON list of entries
  bomb OUT.gz MODE SIZE             gzip of a tar that expands to SIZE bytes: one file
                                    (file), files of 1 MiB (files) or pax global headers
  many OUT.tar N                    N empty files
  opaque LOWER.tar UPPER.tar N M    N lower files in d/; N upper files, then M opaque markers
  deep OUT.tar DEPTH                a directory chain DEPTH deep with a file at the bottom
  layout DIR NAME LAYER...          an OCI layout of those layers; prints NAME@sha256:HEX
  tarball OUT.tar DIR JSON          DIR as a tar, then the JSON list of entries
  docker OUT.tar JSON MANIFEST      a docker save archive: the entries and manifest.json

An entry: {"name", "type": file|dir|symlink|hardlink|fifo|chr|blk|global, "data",
"size" (declared, for a size the data does not have), "link", "major", "minor"}.
"""
import hashlib
import io
import json
import os
import struct
import sys
import tarfile
import zlib

TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE, "global": tarfile.XGLTYPE,
}


def tarinfo(e):
    """The TarInfo of an entry and its data."""
    ti = tarfile.TarInfo(e["name"])
    ti.type = TYPES[e.get("type", "file")]
    ti.mode = e.get("mode", 0o755 if ti.type == tarfile.DIRTYPE else 0o644)
    ti.linkname = e.get("link", "")
    ti.devmajor, ti.devminor = e.get("major", 0), e.get("minor", 0)
    data = e.get("data", "").encode()
    ti.size = e.get("size", len(data)) if ti.type in (tarfile.REGTYPE, tarfile.XGLTYPE) else 0
    return ti, data


def header(e):
    ti, _ = tarinfo(e)
    return ti.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def write_entries(f, entries):
    """Entries written raw: a declared size may exceed the data (the archive then ends)."""
    for e in entries:
        ti, data = tarinfo(e)
        f.write(header(e))
        if ti.size and data:
            f.write(data[:ti.size].ljust(ti.size, b"\0"))
            f.write(b"\0" * ((512 - ti.size % 512) % 512))


def cmd_entries(out, spec):
    with open(out, "wb") as f:
        write_entries(f, json.loads(spec))
        f.write(b"\0" * 1024)


# zlib's crc32_combine, so a bomb's trailer is right without reading what it expands to
def gf2_times(mat, vec):
    s, i = 0, 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def gf2_square(mat):
    return [gf2_times(mat, mat[n]) for n in range(32)]


def crc32_combine(crc1, crc2, len2):
    odd = [0xEDB88320] + [1 << i for i in range(31)]
    even = gf2_square(odd)
    odd = gf2_square(even)
    while len2:
        even = gf2_square(odd)
        if len2 & 1:
            crc1 = gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = gf2_square(even)
        if len2 & 1:
            crc1 = gf2_times(odd, crc1)
        len2 >>= 1
    return crc1 ^ crc2


def crc32_repeat(crc, length, k):
    """crc32 of k copies of a piece whose crc32 is crc."""
    res = 0
    while k:
        if k & 1:
            res = crc32_combine(res, crc, length)
        crc, length = crc32_combine(crc, crc, length), length * 2
        k >>= 1
    return res


def deflate_unit(data):
    """Raw deflate blocks for data that stand alone (no reference before them)."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush(zlib.Z_FULL_FLUSH)


def cmd_bomb(out, mode, size):
    """A valid gzip file of a tar expanding to about size bytes, a few MiB on disk."""
    size, unit = int(size), 1 << 20
    if mode == "file":
        hdr = header({"name": "zeros", "size": size})
        n = (size + 1024 + unit - 1) // unit
        units = [(deflate_unit(hdr), hdr, 1), (deflate_unit(b"\0" * unit), b"\0" * unit, n)]
    elif mode == "files":
        units = []
        for i in range(size // unit):
            hdr = header({"name": "f%d" % i, "size": unit})
            units += [(deflate_unit(hdr), hdr, 1), (deflate_unit(b"\0" * unit), b"\0" * unit, 1)]
        units.append((deflate_unit(b"\0" * 1024), b"\0" * 1024, 1))
    else:
        piece = header({"name": "pax_global", "type": "global", "size": unit}) + b"\0" * unit
        units = [(deflate_unit(piece), piece, size // len(piece))]
    crc, total = 0, 0
    with open(out, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        for block, data, k in units:
            for _ in range(k):
                f.write(block)
            crc = crc32_combine(crc, crc32_repeat(zlib.crc32(data), len(data), k), len(data) * k)
            total += len(data) * k
        f.write(zlib.compressobj(9, zlib.DEFLATED, -15).flush())
        f.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))


def cmd_many(out, n):
    cmd_entries(out, json.dumps([{"name": "m/f%d" % i} for i in range(int(n))]))


def cmd_opaque(lower, upper, n, m):
    n, m = int(n), int(m)
    cmd_entries(lower, json.dumps([{"name": "d/l%d" % i, "data": "lower"} for i in range(n)] +
                                  [{"name": "d/sub/deep", "data": "lower"}]))
    cmd_entries(upper, json.dumps([{"name": "d/u%d" % i, "data": "upper"} for i in range(n)] +
                                  [{"name": "d/.wh..wh..opq"} for _ in range(m)] +
                                  [{"name": "d/after", "data": "upper"}]))


def cmd_deep(out, depth):
    path = "/".join("d" for _ in range(int(depth)))
    cmd_entries(out, json.dumps([{"name": path + "/bottom", "data": "x"}]))


def blob(d, data):
    h = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(d, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(d, "blobs", "sha256", h), "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)


def cmd_layout(d, name, *layers):
    descs = []
    for p in layers:
        with open(p, "rb") as f:
            data = f.read()
        dg, sz = blob(d, data)
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if data[:2] == b"\x1f\x8b" else "")
        descs.append({"mediaType": mt, "digest": dg, "size": sz})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True).encode()
    cd, cs = blob(d, cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": cd, "size": cs},
                      "layers": descs}, sort_keys=True).encode()
    md, ms = blob(d, man)
    with open(os.path.join(d, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"io.containerd.image.name": name}}]}, f)
    print("%s@%s" % (name.rsplit(":", 1)[0], md))


def cmd_tarball(out, d, spec):
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
        t.add(d, arcname=".")
        for e in json.loads(spec):
            ti, data = tarinfo(e)
            t.addfile(ti, io.BytesIO(data) if ti.size else None)


def cmd_docker(out, spec, manifest):
    entries = json.loads(spec) + [{"name": "manifest.json", "data": manifest}]
    cmd_entries(out, json.dumps(entries))


if __name__ == "__main__":
    cmds = {"entries": cmd_entries, "bomb": cmd_bomb, "many": cmd_many, "opaque": cmd_opaque,
            "deep": cmd_deep, "layout": cmd_layout, "tarball": cmd_tarball, "docker": cmd_docker}
    cmds[sys.argv[1]](*sys.argv[2:])
