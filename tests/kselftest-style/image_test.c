/* image_test: hostile images cannot crash, stall or escape lanternd (issue 13).
 *
 * Every archive is crafted in the test's temporary directory by
 * helpers/hostile_image.py. Three parts:
 *  - the layer unpacker, run directly on a temporary root whose parent and a
 *    directory beside it hold sentinels: whiteouts (".wh..", ".wh...", ".wh./x",
 *    opaque, and opaque whiteouts in linear time), ".." and absolute paths, symlink
 *    and hardlink escapes, devices, a huge declared size, a gzip bomb, too many
 *    entries, a tree deeper than the remover keeps open; after each, nothing outside
 *    the root changed; and GNU tar's own pax and gnu archives unpack to what was packed;
 *  - the bundle's read of the image's /etc/passwd and /etc/group: a symlink to the
 *    host's file, a device, a FIFO, an oversized file;
 *  - `lantern image import` through a private lanternd: `docker save` manifests naming
 *    paths outside the archive, symlinks to host files and /dev/zero, a FIFO, a
 *    whiteout in an archive and in a layer, a mount point through a symlink, bombs
 *    past each bound; lanternd stays alive, `lantern ps` answers within 100 ms during
 *    the import of a bomb, its peak memory grows by less than 64 MiB, and a stop in
 *    the middle of an import is prompt. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/image.h"
#include "lantern/oci.h"
#include "lantern/spec.h"
#include "lantern/util.h"

#define MiB (1ull << 20)

static struct tl_env T;
static char helper[600];  /* python3 .../helpers/hostile_image.py */
static int helper_failures;
/* the bounds of the unpacker tests and of the first lanternd */
static const struct image_limits lim = { .layer_bytes = 16 * MiB, .image_bytes = 20 * MiB, .entries = 2000 };

/* Runs the helper; the file it makes is T.dir/NAME. */
__attribute__((format(printf, 1, 2))) static int mk(const char *fmt, ...)
{
	char args[8192], *err = NULL;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	rc = tl_sh(NULL, &err, "cd %s && %s %s", T.dir, helper, args);
	if (rc) {
		tap_diag("helper %s: %s", args, tl_oneline(err));
		helper_failures++;
	}
	free(err);
	return rc;
}

static const char *at(const char *name)
{
	static char buf[4][600];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", T.dir, name);
	return buf[i];
}

/* ---- the unpacker ---- */

/* A case: DIR/parent-sentinel, DIR/outside/secret (the host's side) and DIR/root. */
struct kase {
	char dir[400], root[420], outside[420], secret[440];
	int rootfd;
};

static void case_new(struct kase *k, const char *name)
{
	snprintf(k->dir, sizeof(k->dir), "%s/c-%s", T.dir, name);
	snprintf(k->root, sizeof(k->root), "%s/root", k->dir);
	snprintf(k->outside, sizeof(k->outside), "%s/outside", k->dir);
	snprintf(k->secret, sizeof(k->secret), "%s/secret", k->outside);
	util_mkdir_p(k->root, 0755);
	util_mkdir_p(k->outside, 0755);
	util_write_file_atomic(k->secret, "secret\n", 7);
	tl_sh(NULL, NULL, "echo sentinel > %s/parent-sentinel", k->dir);
	k->rootfd = open(k->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Nothing outside the root changed: the parent holds root, outside and its sentinel;
 * outside holds secret alone, unlinked from anywhere else. */
static bool case_untouched(struct kase *k)
{
	char *out = NULL;
	struct stat st;
	bool ok;

	tl_sh(&out, NULL, "ls -A %s | tr '\\n' ' '; echo '|'; ls -A %s | tr '\\n' ' '", k->dir, k->outside);
	ok = out && !strcmp(out, "outside parent-sentinel root |\nsecret ") && stat(k->secret, &st) == 0 &&
	     st.st_nlink == 1 && S_ISREG(st.st_mode);
	if (!ok)
		tap_diag("outside the root: %s", tl_oneline(out));
	free(out);
	return ok;
}

static int unpack_left(struct kase *k, const char *layer, uint64_t *left, struct lerr *e)
{
	int fd = open(at(layer), O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return lerr_set(e, errno, "test: %s: %s", layer, strerror(errno));
	return image_unpack_layer(k->rootfd, fd, layer, &lim, left, e);
}

static int unpack(struct kase *k, const char *layer, struct lerr *e)
{
	uint64_t left = lim.image_bytes;

	return unpack_left(k, layer, &left, e);
}

static bool exists(const char *dir, const char *rel)
{
	char p[1200];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	return lstat(p, &st) == 0;
}

static void test_whiteouts(void)
{
	static const char *const bad[] = { ".wh..", ".wh...", ".wh./x", "a/.wh./x", "a/.wh..wh.x" };
	struct lerr e = { 0 };
	struct kase k;
	int rc;

	mk("entries keep.tar '[{\"name\":\"a/keep\",\"data\":\"k\"}]'");
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char name[32], layer[48];

		snprintf(name, sizeof(name), "wh%zu", i);
		snprintf(layer, sizeof(layer), "%s.tar", name);
		case_new(&k, name);
		unpack(&k, "keep.tar", &e);
		mk("entries %s '[{\"name\":\"%s\"}]'", layer, bad[i]);
		rc = unpack(&k, layer, &e);
		tap_ok(rc < 0 && (tl_has(e.msg, "whiteout") || tl_has(e.msg, "reserved")) && case_untouched(&k) &&
		       exists(k.root, "a/keep"),
		       "whiteout \"%s\" is refused, nothing outside or in the root removed: %s", bad[i], e.msg);
		close(k.rootfd);
	}

	case_new(&k, "whiteout");
	mk("entries wl.tar '[{\"name\":\"a/x\"},{\"name\":\"a/y\"},{\"name\":\"b/z\"}]'");
	mk("entries wu.tar '[{\"name\":\"a/.wh.x\"},{\"name\":\".wh.b\"},{\"name\":\"a/n\"},{\"name\":\"a/.wh.n\"}]'");
	rc = unpack(&k, "wl.tar", &e) || unpack(&k, "wu.tar", &e);
	tap_ok(rc == 0 && !exists(k.root, "a/x") && exists(k.root, "a/y") && !exists(k.root, "b") &&
	       exists(k.root, "a/n") && case_untouched(&k),
	       "whiteouts remove lower entries (a file, a directory), not the layer's own: %s", rc ? e.msg : "ok");
	close(k.rootfd);

	case_new(&k, "opaque");
	mk("opaque ol.tar ou.tar 50 3");
	rc = unpack(&k, "ol.tar", &e) || unpack(&k, "ou.tar", &e);
	tap_ok(rc == 0 && !exists(k.root, "d/l0") && !exists(k.root, "d/l49") && !exists(k.root, "d/sub") &&
	       exists(k.root, "d/u0") && exists(k.root, "d/u49") && exists(k.root, "d/after") && case_untouched(&k),
	       "an opaque whiteout empties its directory of lower entries, keeps the layer's before and after it");
	close(k.rootfd);

	/* the markers come after 10000 entries of the same directory, 1000 times over: the
	 * quadratic walk this replaces takes minutes */
	case_new(&k, "opaque-big");
	mk("opaque obl.tar obu.tar 10000 1000");
	struct image_limits big = lim;
	uint64_t t0, ms, left = 64 * MiB;
	int fd;

	big.entries = 100000;
	big.image_bytes = left;
	rc = (fd = open(at("obl.tar"), O_RDONLY | O_CLOEXEC)) < 0 ? -errno :
	     image_unpack_layer(k.rootfd, fd, "obl.tar", &big, &left, &e);
	t0 = tl_ms();
	if (!rc)
		rc = (fd = open(at("obu.tar"), O_RDONLY | O_CLOEXEC)) < 0 ? -errno :
		     image_unpack_layer(k.rootfd, fd, "obu.tar", &big, &left, &e);
	ms = tl_ms() - t0;
	tap_ok(rc == 0 && ms < 20000 && !exists(k.root, "d/l9999") && exists(k.root, "d/u9999") &&
	       exists(k.root, "d/after"),
	       "1000 opaque whiteouts after 10000 entries of their directory over 10000 lower ones: %llu ms%s%s",
	       (unsigned long long)ms, rc ? ": " : "", rc ? e.msg : "");
	close(k.rootfd);
}

static void test_paths(void)
{
	struct lerr e = { 0 };
	struct kase k;
	char spec[2048];
	int rc;

	case_new(&k, "dotdot");
	mk("entries dd1.tar '[{\"name\":\"../escape\",\"data\":\"x\"}]'");
	mk("entries dd2.tar '[{\"name\":\"a/../../escape\",\"data\":\"x\"}]'");
	mk("entries dd3.tar '[{\"name\":\"a/..\",\"type\":\"dir\"}]'");
	rc = unpack(&k, "dd1.tar", &e);
	tap_ok(rc < 0 && tl_has(e.msg, "\"..\"") && case_untouched(&k), "\"../escape\" is refused: %s", e.msg);
	rc = unpack(&k, "dd2.tar", &e);
	tap_ok(rc < 0 && tl_has(e.msg, "\"..\"") && case_untouched(&k), "\"a/../../escape\" is refused: %s", e.msg);
	rc = unpack(&k, "dd3.tar", &e);
	tap_ok(rc < 0 && case_untouched(&k), "a directory \"a/..\" is refused, not skipped: %s", e.msg);
	close(k.rootfd);

	case_new(&k, "absolute");
	snprintf(spec, sizeof(spec), "entries abs.tar '[{\"name\":\"%s/abs\",\"data\":\"x\"}]'", k.outside);
	mk("%s", spec);
	rc = unpack(&k, "abs.tar", &e);
	tap_ok(rc == 0 && case_untouched(&k) && exists(k.root, k.outside + 1) && exists(k.root, at("c-absolute/outside/abs") + 1),
	       "an absolute path lands inside the root");
	close(k.rootfd);

	/* a symlink out of the root, then an entry through it */
	case_new(&k, "symlink");
	snprintf(spec, sizeof(spec),
		 "entries sl.tar '[{\"name\":\"evil\",\"type\":\"symlink\",\"link\":\"%s\"},"
		 "{\"name\":\"evil/pwned\",\"data\":\"x\"},"
		 "{\"name\":\"rel\",\"type\":\"symlink\",\"link\":\"../../../../../../../../../..%s\"},"
		 "{\"name\":\"rel/pwned2\",\"data\":\"x\"},"
		 "{\"name\":\"dir/up\",\"type\":\"symlink\",\"link\":\"..\"},"
		 "{\"name\":\"dir/up/up/pwned3\",\"data\":\"x\"}]'",
		 k.outside, k.outside);
	mk("%s", spec);
	rc = unpack(&k, "sl.tar", &e);
	tap_ok(case_untouched(&k),
	       "symlinks out of the root (absolute, relative, \"..\" chains), then entries through them: nothing "
	       "outside (%s)", rc ? e.msg : "written inside the root");
	close(k.rootfd);

	case_new(&k, "hardlink");
	snprintf(spec, sizeof(spec), "entries hl1.tar '[{\"name\":\"hl\",\"type\":\"hardlink\",\"link\":\"../outside/secret\"}]'");
	mk("%s", spec);
	snprintf(spec, sizeof(spec), "entries hl2.tar '[{\"name\":\"hl\",\"type\":\"hardlink\",\"link\":\"%s\"}]'", k.secret);
	mk("%s", spec);
	snprintf(spec, sizeof(spec),
		 "entries hl3.tar '[{\"name\":\"s\",\"type\":\"symlink\",\"link\":\"%s\"},"
		 "{\"name\":\"hl\",\"type\":\"hardlink\",\"link\":\"s\"}]'", k.secret);
	mk("%s", spec);
	rc = unpack(&k, "hl1.tar", &e);
	tap_ok(rc < 0 && case_untouched(&k) && !exists(k.root, "hl"), "a hard link to \"../outside/secret\" is refused: %s", e.msg);
	rc = unpack(&k, "hl2.tar", &e);
	tap_ok(rc < 0 && case_untouched(&k) && !exists(k.root, "hl"),
	       "a hard link to the host's absolute path resolves in the root (nothing there): %s", e.msg);
	rc = unpack(&k, "hl3.tar", &e);
	struct stat st;
	tap_ok(rc == 0 && case_untouched(&k) && lstat(at("c-hardlink/root/hl"), &st) == 0 && S_ISLNK(st.st_mode),
	       "a hard link to a symlink out of the root links the symlink, not its target");
	close(k.rootfd);

	case_new(&k, "devices");
	mk("entries dev.tar '[{\"name\":\"dev/mem\",\"type\":\"chr\",\"major\":1,\"minor\":1},"
	   "{\"name\":\"sda\",\"type\":\"blk\",\"major\":8,\"minor\":0},{\"name\":\"pipe\",\"type\":\"fifo\"}]'");
	rc = unpack(&k, "dev.tar", &e);
	tap_ok(rc == 0 && !exists(k.root, "dev/mem") && !exists(k.root, "sda") &&
	       lstat(at("c-devices/root/pipe"), &st) == 0 && S_ISFIFO(st.st_mode) && case_untouched(&k),
	       "device nodes are not created (a FIFO is)");
	close(k.rootfd);

	/* deeper than the remover keeps open: a whiteout of its top removes it all */
	case_new(&k, "deep");
	mk("deep deep.tar 400");
	mk("entries deepwh.tar '[{\"name\":\".wh.d\"}]'");
	rc = unpack(&k, "deep.tar", &e) || unpack(&k, "deepwh.tar", &e);
	tap_ok(rc == 0 && !exists(k.root, "d") && case_untouched(&k), "a whiteout removes a tree 400 directories deep: %s",
	       rc ? e.msg : "ok");
	close(k.rootfd);
}

/* Our reader against GNU tar's own pax and gnu archives: long names and link
 * targets (pax records, GNU long names), hard links, a non-ASCII name, a big file. */
static void test_reader(void)
{
	static const char *const formats[] = { "pax", "gnu" };
	char src[600], *want = NULL;
	struct lerr e = { 0 };

	snprintf(src, sizeof(src), "%s/reader-src", T.dir);
	tl_sh(NULL, NULL,
	      "set -e; d=%s; long=$(printf 'n%%.0s' $(seq 150)); mkdir -p $d/$long/$long/sub; "
	      "echo deep > $d/$long/$long/sub/$long.txt; ln -s $long/$long/sub/$long.txt $d/longlink; "
	      "ln $d/$long/$long/sub/$long.txt $d/hard; printf 'x' > $d/\303\251t\303\251; "
	      "head -c 3000000 /dev/urandom > $d/big; mkfifo $d/fifo",
	      src);
	tl_sh(&want, NULL, "cd %s && find . -mindepth 1 -printf '%%y %%P %%l %%s\n' | sort; md5sum big", src);
	for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
		char name[32], *got = NULL;
		struct kase k;
		int rc;

		snprintf(name, sizeof(name), "reader-%s", formats[i]);
		case_new(&k, name);
		tl_sh(NULL, NULL, "tar --format=%s -C %s -czf %s/%s.tgz .", formats[i], src, T.dir, name);
		snprintf(name + strlen(name), sizeof(name) - strlen(name), ".tgz");
		rc = unpack(&k, name, &e);
		tl_sh(&got, NULL, "cd %s && find . -mindepth 1 -printf '%%y %%P %%l %%s\n' | sort; md5sum big", k.root);
		tap_ok(rc == 0 && want && got && !strcmp(want, got) && case_untouched(&k),
		       "GNU tar --format=%s: what our reader unpacks is what was packed%s%s", formats[i],
		       rc ? ": " : "", rc ? e.msg : "");
		if (rc == 0 && want && got && strcmp(want, got))
			tap_diag("want %s got %s", tl_oneline(want), tl_oneline(got));
		free(got);
		close(k.rootfd);
	}
	free(want);
}

/* Disk used under dir, in KiB. */
static long du_k(const char *dir)
{
	char *out = NULL;
	long k;

	tl_sh(&out, NULL, "du -sk %s | cut -f1", dir);
	k = out ? atol(out) : -1;
	free(out);
	return k;
}

static void test_bounds(void)
{
	struct lerr e = { 0 };
	struct kase k;
	uint64_t t0, left;
	int rc;

	case_new(&k, "declared");
	mk("entries huge.tar '[{\"name\":\"big\",\"size\":1099511627776}]'");
	t0 = tl_ms();
	rc = unpack(&k, "huge.tar", &e);
	tap_ok(rc == -EFBIG && tl_has(e.msg, "declares 1099511627776 bytes") && tl_ms() - t0 < 1000 &&
	       du_k(k.root) < 1024 && case_untouched(&k), "a file declaring 1 TiB is refused before a byte is written: %s", e.msg);
	close(k.rootfd);

	case_new(&k, "bomb");
	mk("bomb bomb.gz file 4294967296");
	t0 = tl_ms();
	rc = unpack(&k, "bomb.gz", &e);
	tap_ok(rc == -EFBIG && tl_has(e.msg, "--image-layer-max") && du_k(k.root) < 1024 && case_untouched(&k),
	       "a gzip bomb (4 MiB) of one 4 GiB file is refused by its header (%llu ms): %s",
	       (unsigned long long)(tl_ms() - t0), e.msg);
	close(k.rootfd);

	case_new(&k, "files");
	mk("bomb fbomb.gz files 67108864");
	t0 = tl_ms();
	rc = unpack(&k, "fbomb.gz", &e);
	tap_ok(rc == -EFBIG && tl_has(e.msg, "--image-layer-max") &&
	       du_k(k.root) <= 16 * 1024 + 64 && case_untouched(&k),
	       "a gzip bomb of 64 files of 1 MiB stops writing at the layer's bound of 16 MiB (%llu ms): %s",
	       (unsigned long long)(tl_ms() - t0), e.msg);
	close(k.rootfd);

	case_new(&k, "global");
	mk("bomb gbomb.gz global 1073741824");
	rc = unpack(&k, "gbomb.gz", &e);
	tap_ok(rc == -EFBIG && tl_has(e.msg, "--image-layer-max") && case_untouched(&k),
	       "a bomb of 1 GiB of pax global headers (nothing written) stops at the layer's bound: %s", e.msg);
	close(k.rootfd);

	case_new(&k, "many");
	mk("many many.tar 3000");
	rc = unpack(&k, "many.tar", &e);
	tap_ok(rc == -EFBIG && tl_has(e.msg, "more than 2000 entries") && case_untouched(&k),
	       "3000 tiny entries stop at the entry bound: %s", e.msg);
	close(k.rootfd);

	case_new(&k, "image-total");
	mk("bomb l1.gz file 12582912");
	left = lim.image_bytes;
	rc = unpack_left(&k, "l1.gz", &left, &e);
	rc = rc ? rc : unpack_left(&k, "l1.gz", &left, &e);
	tap_ok(rc == -EFBIG && tl_has(e.msg, "--image-max") && case_untouched(&k),
	       "two layers of 12 MiB pass the image's bound of 20 MiB: %s", e.msg);
	close(k.rootfd);
}

/* ---- the bundle's passwd and group ---- */

static int bundle(const char *rootfs, const char *user, struct lerr *e)
{
	static const char yaml[] = "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: b\n"
				   "spec:\n  image_digest: x@sha256:0000000000000000000000000000000000000000000000000000000000000000\n"
				   "  isolation: trusted\n  command: [\"/bin/true\"]\n";
	struct spec_errors errs = { 0 };
	struct spec *s = NULL;
	json_t *ic = json_pack("{s:s}", "User", user);
	char dir[600];
	int rc;

	snprintf(dir, sizeof(dir), "%s/bundle", T.dir);
	util_mkdir_p(dir, 0700);
	if (spec_parse("b.yaml", yaml, strlen(yaml), &s, &errs) < 0) {
		spec_errors_free(&errs);
		json_decref(ic);
		return lerr_set(e, EINVAL, "test: spec does not parse");
	}
	struct oci_bundle_req r = {
		.dir = dir, .rootfs = rootfs, .image_config = ic, .spec = s, .cgroups_path = "/t/i",
		.kind = OCI_RUNC, .net = OCI_NET_LOOPBACK, .hostname = "h",
	};
	rc = oci_bundle_write(&r, e);
	spec_free(s);
	json_decref(ic);
	return rc;
}

static void test_bundle_ids(void)
{
	char rootfs[600], cfg[700], *out = NULL;
	struct lerr e = { 0 };
	uint64_t t0;
	int rc;

	snprintf(rootfs, sizeof(rootfs), "%s/idroot", T.dir);
	snprintf(cfg, sizeof(cfg), "%s/bundle/config.json", T.dir);
	tl_sh(NULL, NULL, "mkdir -p %s/etc && printf 'app:x:1234:5678::/:/bin/sh\\n' > %s/etc/passwd && "
	      "printf 'grp:x:4321:\\n' > %s/etc/group", rootfs, rootfs, rootfs);
	rc = bundle(rootfs, "app:grp", &e);
	tl_sh(&out, NULL, "tr -d ' \\n' < %s", cfg);
	tap_ok(rc == 0 && tl_has(out, "\"uid\":1234") && tl_has(out, "\"gid\":4321"),
	       "the image's user and group come from its own /etc/passwd and /etc/group: %s", rc ? e.msg : "uid 1234 gid 4321");
	free(out);

	/* the host's passwd has daemon (uid 1); the image's file is a link to it */
	tl_sh(NULL, NULL, "rm -f %s/etc/passwd && ln -s /etc/passwd %s/etc/passwd", rootfs, rootfs);
	rc = bundle(rootfs, "daemon", &e);
	tap_ok(rc < 0 && !tl_has(e.msg, "\"uid\""), "a passwd that is a symlink to the host's /etc/passwd is not the host's: %s", e.msg);
	tl_sh(NULL, NULL, "rm -f %s/etc/passwd && ln -s ../../../../../../../../etc/passwd %s/etc/passwd", rootfs, rootfs);
	rc = bundle(rootfs, "daemon", &e);
	tap_ok(rc < 0, "nor through \"..\" out of the root: %s", e.msg);

	tl_sh(NULL, NULL, "rm -f %s/etc/passwd && mknod %s/etc/passwd c 1 5", rootfs, rootfs);
	t0 = tl_ms();
	rc = bundle(rootfs, "app", &e);
	tap_ok(rc < 0 && tl_has(e.msg, "not a regular file") && tl_ms() - t0 < 1000,
	       "a passwd that is /dev/zero's device is refused at once: %s", e.msg);

	tl_sh(NULL, NULL, "rm -f %s/etc/passwd && printf 'app:x:1:1::/:/bin/sh\\n' > %s/etc/passwd && "
	      "rm -f %s/etc/group && mkfifo %s/etc/group", rootfs, rootfs, rootfs, rootfs);
	t0 = tl_ms();
	rc = bundle(rootfs, "app:grp", &e);
	tap_ok(rc < 0 && tl_has(e.msg, "not a regular file") && tl_ms() - t0 < 1000,
	       "a group file that is a FIFO nobody writes does not block: %s", e.msg);

	tl_sh(NULL, NULL, "rm -f %s/etc/group && head -c 2097152 /dev/zero > %s/etc/group", rootfs, rootfs);
	rc = bundle(rootfs, "app:grp", &e);
	tap_ok(rc < 0 && tl_has(e.msg, "larger than 1 MiB"), "a group file of 2 MiB is refused: %s", e.msg);
}

/* ---- through lanternd ---- */

static bool daemon_alive(void)
{
	return T.daemon > 0 && kill(T.daemon, 0) == 0 && tl_lantern(&T, NULL, NULL, "ps") == 0;
}

/* A blob in the store with the bytes of host file path. */
static bool stored(const char *path)
{
	char *out = NULL;
	bool yes;

	tl_sh(&out, NULL, "test -f %s/images/blobs/sha256/$(sha256sum %s | cut -d' ' -f1) && echo yes", T.state, path);
	yes = tl_has(out, "yes");
	free(out);
	return yes;
}

static int import(char **err, const char *what)
{
	return tl_lantern(&T, NULL, err, "image import %s", what);
}

/* What the store's index lists and its blob count, to see that nothing went. */
static void store_state(char *buf, size_t cap)
{
	char *out = NULL;

	tl_sh(&out, NULL, "ls %s/images/blobs/sha256 | wc -l; %s/lantern --socket %s image ls | sort", T.state, T.build, T.sock);
	snprintf(buf, cap, "%s", out ? out : "");
	free(out);
}

static void test_import_docker(void)
{
	char *out = NULL, *err = NULL, before[4096], after[4096], img[256];
	uint64_t t0;
	int rc;

	rc = tl_sh(&out, NULL, "scripts/mkimage.sh %s test/good:1", at("good"));
	snprintf(img, sizeof(img), "%s", out ? out : "");
	if (strchr(img, '\n'))
		*strchr(img, '\n') = '\0';
	free(out);
	out = NULL;
	rc = rc ? rc : tl_lantern(&T, &out, &err, "image import %s && %s/lantern --socket %s image ls", at("good"), T.build, T.sock);
	tap_ok(rc == 0 && tl_has(out, strchr(img, '@') ? strchr(img, '@') + 1 : "?") && tl_has(out, " yes"),
	       "an image is unpacked when it is imported: %s", tl_oneline(out));
	free(out);
	free(err);
	store_state(before, sizeof(before));

	mk("docker dk1.tar '[{\"name\":\"l.tar\",\"data\":\"\"}]' "
	   "'[{\"Config\":\"../../../../../../etc/hostname\",\"RepoTags\":[\"x:1\"],\"Layers\":[\"l.tar\"]}]'");
	rc = import(&err, at("dk1.tar"));
	tap_ok(rc != 0 && tl_has(err, "\"..\"") && !stored("/etc/hostname"),
	       "a docker save Config of \"../../../../../../etc/hostname\" is refused, nothing stored: %s", tl_oneline(err));
	free(err);

	mk("docker dk2.tar '[{\"name\":\"cfg.json\",\"type\":\"symlink\",\"link\":\"/etc/os-release\"}]' "
	   "'[{\"Config\":\"cfg.json\",\"Layers\":[]}]'");
	rc = import(&err, at("dk2.tar"));
	tap_ok(rc != 0 && tl_has(err, "symlink") && !stored("/etc/os-release"),
	       "a Config that is a symlink to /etc/os-release is refused, nothing stored: %s", tl_oneline(err));
	free(err);

	mk("docker dk3.tar '[{\"name\":\"cfg.json\",\"type\":\"symlink\",\"link\":\"/dev/zero\"},"
	   "{\"name\":\"l.tar\",\"type\":\"symlink\",\"link\":\"../../../../../dev/zero\"}]' "
	   "'[{\"Config\":\"cfg.json\",\"Layers\":[\"l.tar\"]}]'");
	t0 = tl_ms();
	rc = import(&err, at("dk3.tar"));
	tap_ok(rc != 0 && tl_ms() - t0 < 2000 && du_k(T.state) < 64 * 1024,
	       "a Config and a layer that are symlinks to /dev/zero are refused at once (%llu ms): %s",
	       (unsigned long long)(tl_ms() - t0), tl_oneline(err));
	free(err);

	mk("docker dk4.tar '[{\"name\":\"cfg.json\",\"type\":\"fifo\"}]' '[{\"Config\":\"cfg.json\",\"Layers\":[]}]'");
	t0 = tl_ms();
	rc = import(&err, at("dk4.tar"));
	tap_ok(rc != 0 && tl_ms() - t0 < 2000 && tl_has(err, "not a file"),
	       "a Config that is a FIFO is refused, never opened: %s", tl_oneline(err));
	free(err);

	/* docker save writes a layer it already wrote as a relative symlink to the first */
	mk("docker dk5.tar '[{\"name\":\"a/layer.tar\",\"data\":\"\"},{\"name\":\"cfg.json\",\"data\":\"{}\"},"
	   "{\"name\":\"b/layer.tar\",\"type\":\"symlink\",\"link\":\"../a/layer.tar\"}]' "
	   "'[{\"Config\":\"cfg.json\",\"RepoTags\":[\"test/docker:1\"],\"Layers\":[\"a/layer.tar\",\"b/layer.tar\"]}]'");
	rc = tl_lantern(&T, &out, &err, "image import %s && %s/lantern --socket %s image ls", at("dk5.tar"), T.build, T.sock);
	tap_ok(rc == 0 && tl_has(out, "test/docker:1"),
	       "a docker save layer that links to another inside the archive is imported: %s", tl_oneline(rc ? err : out));
	free(out);
	free(err);
	tl_lantern(&T, NULL, NULL, "image rm test/docker:1");

	store_state(after, sizeof(after));
	tap_ok(!strcmp(before, after) && daemon_alive(), "the store is as it was and lanternd answers");
}

static void test_import_layers(void)
{
	char *out = NULL, *err = NULL, before[4096], after[4096], ref[256], hostrun[600];
	int rc;

	store_state(before, sizeof(before));
	/* an archive with a whiteout beside the layout: once it emptied the store */
	mk("tarball wa.tar %s '[{\"name\":\".wh...\"},{\"name\":\".wh..wh..opq\"}]'", at("good"));
	rc = import(&err, at("wa.tar"));
	store_state(after, sizeof(after));
	tap_ok(!strcmp(before, after) && daemon_alive(),
	       "an image archive holding \".wh...\" and an opaque marker removes nothing from the store (%s)",
	       rc ? tl_oneline(err) : "imported; the entries are inert files");
	free(err);

	mk("entries whl.tar '[{\"name\":\"etc/x\",\"data\":\"x\"},{\"name\":\".wh...\"}]'");
	mk("layout %s test/wh:1 whl.tar >/dev/null", at("whl"));
	rc = import(&err, at("whl"));
	store_state(after, sizeof(after));
	tap_ok(rc != 0 && tl_has(err, "names no entry") && !strcmp(before, after),
	       "a layer holding \".wh...\" is refused, the store untouched: %s", tl_oneline(err));
	free(err);

	/* the mount points made at unpack go through the image's symlinks inside its root */
	snprintf(hostrun, sizeof(hostrun), "%s/hostrun", T.dir);
	util_mkdir_p(hostrun, 0755);
	mk("entries mp.tar '[{\"name\":\"run\",\"type\":\"symlink\",\"link\":\"%s\"},"
	   "{\"name\":\"tmp\",\"type\":\"symlink\",\"link\":\"../../../../../../../../%s\"}]'", hostrun, hostrun);
	tl_sh(&out, NULL, "cd %s && %s layout %s test/mp:1 mp.tar", T.dir, helper, at("mp"));
	snprintf(ref, sizeof(ref), "%s", out ? out : "");
	free(out);
	rc = import(&err, at("mp"));
	tl_sh(&out, NULL, "ls -A %s | wc -l", hostrun);
	tap_ok(out && atoi(out) == 0 && daemon_alive(),
	       "mount points under a symlink out of the root are never made on the host (%s)",
	       rc ? tl_oneline(err) : "imported");
	free(out);
	free(err);
	tl_lantern(&T, NULL, NULL, "image rm test/mp:1");

	mk("bomb lb.gz file 4294967296");
	mk("layout %s test/bomb:1 lb.gz >/dev/null", at("lb"));
	rc = import(&err, at("lb"));
	tap_ok(rc != 0 && tl_has(err, "--image-layer-max") && daemon_alive(),
	       "a layer that is a gzip bomb is refused naming the bound: %s", tl_oneline(err));
	free(err);

	mk("many lm.tar 5000");
	mk("layout %s test/many:1 lm.tar >/dev/null", at("lm"));
	rc = import(&err, at("lm"));
	tap_ok(rc != 0 && tl_has(err, "--image-entries") && daemon_alive(),
	       "a layer of 5000 entries is refused naming the bound: %s", tl_oneline(err));
	free(err);

	mk("bomb ab.gz file 4294967296");
	rc = import(&err, at("ab.gz"));
	store_state(after, sizeof(after));
	tap_ok(rc != 0 && tl_has(err, "--image-max") && !strcmp(before, after) && du_k(T.state) < 64 * 1024,
	       "an import archive that is a gzip bomb is refused, its parts removed: %s", tl_oneline(err));
	free(err);
}

static long vm_kib(pid_t pid, const char *field)
{
	char path[64], *buf = NULL, *p;
	long v = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (util_read_file(path, &buf, NULL) == 0 && (p = strstr(buf, field)))
		v = atol(p + strlen(field) + 1);
	free(buf);
	return v;
}

/* Milliseconds from connecting to lanternd's socket to the whole answer of a `ps`
 * request (what `lantern ps` waits for, without starting a process), or -1. */
static long ps_ms(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 2 };
	static const char req[] = "{\"op\":\"ps\"}\n";
	uint64_t t0 = tl_ms();
	char buf[65536];
	size_t got = 0;
	long ms = -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", T.sock);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1) {
		while (got < sizeof(buf)) {
			ssize_t n = read(fd, buf + got, sizeof(buf) - got);

			if (n <= 0)
				break;
			got += (size_t)n;
			if (memchr(buf, '\n', got)) {
				ms = (long)(tl_ms() - t0);
				break;
			}
		}
	}
	if (fd >= 0)
		close(fd);
	return ms;
}

/* Starts `lantern image import path` in the background; its exit status and stderr
 * come from import_wait. */
static pid_t import_start(const char *path)
{
	pid_t pid = fork();

	if (pid == 0) {
		char cmd[1200];

		snprintf(cmd, sizeof(cmd), "%s/lantern --socket %s image import %s >%s 2>&1", T.build, T.sock, path,
			 at("import.out"));
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void test_responsive(void)
{
	char *out = NULL;
	uint64_t t0, worst = 0, ms;
	long hwm0, hwm1;
	int probes = 0, st = 0, rmrc;
	pid_t imp;

	tl_daemon_stop(&T, SIGTERM);
	if (tl_daemon_start(&T, "--image-layer-max 2147483648 --image-max 4294967296") < 0) {
		tap_ok(false, "lanternd restarts with bounds of 2 GiB");
		return;
	}
	mk("bomb big.gz global 4294967296");
	mk("layout %s test/big:1 big.gz >/dev/null", at("big"));
	hwm0 = vm_kib(T.daemon, "VmHWM:");
	t0 = tl_ms();
	imp = import_start(at("big"));
	usleep(100000);
	rmrc = tl_lantern(&T, NULL, NULL, "image rm test/good:1");
	while (waitpid(imp, &st, WNOHANG) == 0) {
		long p = ps_ms();

		worst = p < 0 ? 1000000 : (uint64_t)p > worst ? (uint64_t)p : worst;
		probes++;
		usleep(20000);
	}
	ms = tl_ms() - t0;
	hwm1 = vm_kib(T.daemon, "VmHWM:");
	tl_sh(&out, NULL, "cat %s", at("import.out"));
	tap_diag("import of a 4 GiB bomb of pax headers (bound 2 GiB): %llu ms; lanternd VmHWM %ld -> %ld KiB, "
		 "VmRSS %ld KiB", (unsigned long long)ms, hwm0, hwm1, vm_kib(T.daemon, "VmRSS:"));
	tap_ok(WIFEXITED(st) && WEXITSTATUS(st) != 0 && tl_has(out, "--image-layer-max"),
	       "the import ends refused naming the bound after %llu ms: %s", (unsigned long long)ms, tl_oneline(out));
	tap_ok(probes >= 5 && worst < 100 && daemon_alive(),
	       "a ps request was answered %d times during the import, the slowest in %llu ms", probes,
	       (unsigned long long)worst);
	tap_ok(rmrc != 0, "lantern image rm is refused while an import is under way");
	tap_ok(hwm0 > 0 && hwm1 - hwm0 < 64 * 1024, "lanternd's peak memory grew by %ld KiB (bound 64 MiB)", hwm1 - hwm0);
	free(out);

	/* a stop in the middle of an import: the worker sees it and lanternd exits */
	imp = import_start(at("big"));
	usleep(300000);
	t0 = tl_ms();
	tl_daemon_stop(&T, SIGTERM);
	ms = tl_ms() - t0;
	waitpid(imp, &st, 0);
	tap_ok(ms < 3000, "SIGTERM during an import stops lanternd in %llu ms", (unsigned long long)ms);
}

int main(void)
{
	const char *missing = tl_env_missing();
	struct lerr e = { 0 };

	tap_plan(51);
	if (tl_env_init(&T, "image") < 0 || !getcwd(helper, sizeof(helper) - 128)) {
		printf("Bail out! cannot make the test directory\n");
		return 1;
	}
	memmove(helper + 8, helper, strlen(helper) + 1);
	memcpy(helper, "python3 ", 8);
	strcat(helper, "/tests/kselftest-style/helpers/hostile_image.py");
	test_whiteouts();
	test_paths();
	test_reader();
	test_bounds();
	test_bundle_ids();
	if (missing) {
		for (int i = 0; i < 18; i++)
			tap_skip(missing, "lanternd image import");
	} else if (tl_daemon_start(&T, "--image-layer-max 16777216 --image-max 20971520 --image-entries 2000") < 0) {
		lerr_set(&e, EIO, "lanternd did not start (log %s)", T.log);
		for (int i = 0; i < 18; i++)
			tap_ok(false, "%s", e.msg);
	} else {
		test_import_docker();
		test_import_layers();
		test_responsive();
	}
	tap_ok(helper_failures == 0, "every crafted archive was made (%d helper failures)", helper_failures);
	tl_sh(NULL, NULL, "cd %s && rm -rf c-deep", T.dir);
	tl_env_cleanup(&T);
	return tap_done();
}
