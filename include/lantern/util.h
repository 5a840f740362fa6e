/* util.h: small helpers every module uses: files, directories, ids, clocks, JSON string
 * escaping, logging. */
#ifndef LANTERN_UTIL_H
#define LANTERN_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Counters are unsigned and saturate; where one leaves as a signed 64-bit number (JSON,
 * OTLP, the proto) it is shown as at most INT64_MAX, never wrapped (sums saturate in
 * meter_sat_add). */
static inline int64_t util_sat_i64(uint64_t v)
{
	return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Errors: functions return -errno and write a message naming object and reason. */
struct lerr {
	char msg[512];
};
int lerr_set(struct lerr *e, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

int util_mkdir_p(const char *path, mode_t mode);
int util_rm_rf(const char *path);
/* Removes name (under the directory open as dirfd) and everything below it, for what a
 * directory's content may not be trusted: nothing is followed as a symlink (openat
 * O_NOFOLLOW, unlinkat removes a link itself), no other filesystem is entered (a mount
 * point inside stays, and the directories above it), max_depth levels at most (deeper
 * ones stay). With UTIL_RM_DIRS_ONLY only directories are removed (a cgroup's, whose
 * files go with their rmdir); a name that is not one is -ENOTDIR. 0 when name is gone,
 * else -errno of its own removal. */
#define UTIL_RM_DIRS_ONLY 1u
int util_rm_tree_at(int dirfd, const char *name, unsigned max_depth, unsigned flags);
/* Reads a whole file; *buf is NUL-terminated and must be freed. */
int util_read_file(const char *path, char **buf, size_t *len);
/* Writes via a temporary file, fsync and rename, so readers see old or new. */
int util_write_file_atomic(const char *path, const void *buf, size_t len);
/* The same without the fsync: readers and a restarted lanternd see old or new, but
 * after a power loss the file may be old, empty or missing unless the caller makes
 * it durable later (util_fsync_path). */
int util_write_file_replace(const char *path, const void *buf, size_t len);
/* fsync of the file (or directory) at path. */
int util_fsync_path(const char *path);
int util_write_str(const char *path, const char *s); /* plain write, for cgroup files */
void util_random_hex(char *out, size_t nbytes); /* out holds 2*nbytes+1 */
uint64_t util_now_ns(int clockid);
/* Writes prefix followed by the six-character placeholder mkstemp/mkdtemp replace. */
void util_tmp_template(char *buf, size_t len, const char *prefix);
/* True if something accepts connections on the Unix stream socket at path. */
bool util_unix_socket_alive(const char *path);
/* Writes s into out (cap > 0 bytes, NUL-terminated) as the body of a JSON string:
 * '"', '\\' and control characters escaped. Stops before a character whose escape
 * would not fit, so a truncated result is still valid JSON. Returns its length. */
size_t util_json_escape(char *out, size_t cap, const char *s);
/* While on, every block jansson frees is zeroed first (a parsed or built document that
 * held a secret leaves no copy in freed heap: its strings, the parser's scratch
 * buffer). Blocks are still plain malloc'd, so turning it off at any time is safe.
 * Calls nest: util_json_wipe(true) returns the state to hand back to
 * util_json_wipe_restore. */
bool util_json_wipe(bool on);
void util_json_wipe_restore(bool was);

/* Logging to stderr, one line each, prefixed with the program name. */
void log_set_prog(const char *prog);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
