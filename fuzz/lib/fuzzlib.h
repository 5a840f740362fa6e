/* fuzzlib.h: what the fuzz targets share: typed values read off the fuzzer's input, a
 * private temporary directory per process, and a stop that names the broken property.
 *
 * A target asserts the properties of the code it drives with FZ_CHECK: a failure aborts,
 * which libFuzzer reports as a crash with the input that caused it, like any sanitizer
 * finding. */
#ifndef LANTERN_FUZZLIB_H
#define LANTERN_FUZZLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The input, consumed front to back; reads past its end give zeros and empty strings,
 * so every input is a valid sequence of actions. */
struct fz {
	const uint8_t *p;
	size_t n;
};

uint8_t fz_u8(struct fz *f);
uint16_t fz_u16(struct fz *f);
uint32_t fz_u32(struct fz *f);
/* The next piece: a 16-bit little-endian length, then that many bytes (fewer at the end). */
const uint8_t *fz_piece(struct fz *f, size_t *len);
/* The same as a malloc'd NUL-terminated string (NULs inside are kept). */
char *fz_str(struct fz *f, size_t *len);
/* Everything left. */
const uint8_t *fz_rest(struct fz *f, size_t *len);

/* A directory made once per process under $TMPDIR (or /tmp), removed at exit:
 * "<tmp>/lantern-fuzz-NAME-" and six random characters. Targets make what they need
 * inside it. */
const char *fz_workdir(const char *name);
/* Empties dir (the directory itself stays), never following a link. */
void fz_empty(const char *dir);
/* A memfd holding data, positioned at 0, or -1. */
int fz_memfd(const void *data, size_t len);

/* Rewrites the checksum of every header of a plain tar in buf, walking entries as
 * userspace/image/tar.c does, so that mutated headers are read instead of refused as
 * damaged. Stops at what it cannot walk; gzip'd archives are left alone. */
void fz_tar_fix_checksums(uint8_t *buf, size_t len);

/* Prints "SUMMARY: lantern-fuzz: ..." through the sanitizers' report channel (which
 * survives -close_fd_mask=2, unlike stderr) and aborts. */
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));
#define FZ_CHECK(cond, ...) \
	do { if (!(cond)) fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)

#endif
