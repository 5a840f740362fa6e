/* record.h: the record scanner of record.c, shared with state.c: lantern's journal
 * records read without a JSON parser (see record.c). */
#ifndef LANTERN_HARNESS_RECORD_H
#define LANTERN_HARNESS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/harness.h"

/* One member: the key (kn bytes, as written, no escapes expected) and the value's text
 * [v, ve). Return false to stop the scan as malformed. */
typedef bool (*record_member_fn)(void *arg, const char *k, size_t kn, const char *v, const char *ve);
/* Calls fn for each member of the object [p, end); false when it is not one. */
bool record_scan(const char *p, const char *end, record_member_fn fn, void *arg);
bool record_key_is(const char *k, size_t n, const char *name);
/* A string value decoded (escapes, \u surrogate pairs) into buf (cap bytes with the
 * NUL). Too long: false, or the first bytes when truncate. */
bool record_string(const char *v, const char *ve, char *buf, size_t cap, bool truncate);
/* An integer; negative ones read as 0, huge ones saturate. */
bool record_uint(const char *v, const char *ve, uint64_t *out);
bool record_bool(const char *v, const char *ve, bool *out);

#endif
