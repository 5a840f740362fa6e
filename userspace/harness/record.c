/* record.c: journal records as text. Writing: a JSON object built by hand (struct
 * json_text), so a step's result or a run's output, JSON that lantern-wire decoded and
 * re-encoded compactly, goes into the record as bytes, never parsed by lanternd.
 * Reading: a small scanner over a record's object that hands each member's key and the
 * span of its value to a callback, decodes the string values the state needs (escapes
 * included) and skips everything else. It is iterative and bounded: nesting deeper
 * than SCAN_MAX_DEPTH, a string or number that does not end, or anything a record
 * written by lantern never holds is refused, never guessed. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

#define SCAN_MAX_DEPTH 512

/* ---- writing ---- */

static void put(struct json_text *t, const char *s, size_t n)
{
	char *b;
	size_t cap;

	if (t->failed)
		return;
	if (t->len + n + 2 > t->cap) {
		cap = t->cap ? t->cap : 256;
		while (t->len + n + 2 > cap)
			cap *= 2;
		if (!(b = realloc(t->buf, cap))) {
			t->failed = true;
			return;
		}
		t->buf = b;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, s, n);
	t->len += n;
}

static void put_escaped(struct json_text *t, const char *s)
{
	put(t, "\"", 1);
	for (const char *run = s;; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];

		if (c && c != '"' && c != '\\' && c >= 0x20)
			continue;
		put(t, run, (size_t)(s - run));
		if (!c)
			break;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(t, esc, 2);
		} else {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(t, esc, 6);
		}
		run = s + 1;
	}
	put(t, "\"", 1);
}

static void key(struct json_text *t, const char *k)
{
	if (!t->first)
		put(t, ",", 1);
	t->first = false;
	put_escaped(t, k);
	put(t, ":", 1);
}

void json_text_open(struct json_text *t)
{
	memset(t, 0, sizeof(*t));
	t->first = true;
	put(t, "{", 1);
}

void json_text_str(struct json_text *t, const char *k, const char *v)
{
	key(t, k);
	put_escaped(t, v);
}

void json_text_int(struct json_text *t, const char *k, int64_t v)
{
	char b[32];

	key(t, k);
	put(t, b, (size_t)snprintf(b, sizeof(b), "%" PRId64, v));
}

void json_text_uint(struct json_text *t, const char *k, uint64_t v)
{
	char b[32];

	key(t, k);
	put(t, b, (size_t)snprintf(b, sizeof(b), "%" PRIu64, v));
}

/* As jansson writes reals (%.17g, with a ".0" when it looks like an integer), so a
 * record reads the same whichever wrote it. */
void json_text_real(struct json_text *t, const char *k, double v)
{
	char b[40];
	int n;

	if (!isfinite(v))
		v = 0;
	n = snprintf(b, sizeof(b), "%.17g", v);
	if (!strpbrk(b, ".eE") && n < (int)sizeof(b) - 2) {
		b[n++] = '.';
		b[n++] = '0';
		b[n] = '\0';
	}
	key(t, k);
	put(t, b, (size_t)n);
}

void json_text_bool(struct json_text *t, const char *k, bool v)
{
	key(t, k);
	put(t, v ? "true" : "false", v ? 4 : 5);
}

void json_text_raw(struct json_text *t, const char *k, const char *raw, size_t len)
{
	key(t, k);
	put(t, raw, len);
}

char *json_text_take(struct json_text *t, size_t *len)
{
	char *b;

	put(t, "}", 1);
	if (t->failed) {
		free(t->buf);
		memset(t, 0, sizeof(*t));
		return NULL;
	}
	t->buf[t->len] = '\0';
	b = t->buf;
	if (len)
		*len = t->len;
	memset(t, 0, sizeof(*t));
	return b;
}

/* ---- reading ---- */

/* Character classes, one table lookup each: JSON whitespace, what ends a scalar, and
 * what a nested value's skip stops at. */
enum { SC_WS = 1, SC_END = 2, SC_NEST = 4 };
static const unsigned char scan_class[256] = {
	[' '] = SC_WS | SC_END, ['\n'] = SC_WS | SC_END, ['\t'] = SC_WS | SC_END,
	['\r'] = SC_WS | SC_END, [','] = SC_END, ['}'] = SC_END | SC_NEST, [']'] = SC_END | SC_NEST,
	['"'] = SC_NEST, ['{'] = SC_NEST, ['['] = SC_NEST,
};

static bool scan_is(char c, unsigned cls)
{
	return scan_class[(unsigned char)c] & cls;
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && scan_is(*p, SC_WS))
		p++;
	return p;
}

/* p at a '"': past the closing quote, or NULL. A quote closes the string when the
 * backslashes right before it are even in number (each pair is one escaped backslash),
 * which lets memchr find the candidates: a replay skips every step's result this way,
 * workload text of any length. The backward count stops at the opening quote. */
static const char *skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++) {
		const char *b;

		if (!(p = memchr(p, '"', (size_t)(end - p))))
			return NULL;
		for (b = p; b[-1] == '\\'; b--)
			;
		if ((p - b) % 2 == 0)
			return p + 1;
	}
	return NULL;
}

/* Past an object or array (p at its '{' or '['), strings and nesting included, or NULL. */
static const char *skip_nested(const char *p, const char *end)
{
	int depth = 0;

	do {
		while (p < end && !scan_is(*p, SC_NEST))
			p++;
		if (p >= end)
			return NULL;
		if (*p == '"') {
			if (!(p = skip_string(p, end)))
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[') {
			if (++depth > SCAN_MAX_DEPTH)
				return NULL;
		} else {
			depth--;
		}
		p++;
	} while (depth > 0);
	return p;
}

/* Past one JSON value (strings, nesting, scalars) that starts at p, or NULL. */
static const char *skip_value(const char *p, const char *end)
{
	const char *s;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return skip_string(p, end);
	if (*p == '{' || *p == '[')
		return skip_nested(p, end);
	for (s = p; p < end && !scan_is(*p, SC_END); p++)
		;
	return p > s ? p : NULL;
}

bool record_scan(const char *p, const char *end, record_member_fn fn, void *arg)
{
	p = skip_ws(p, end);
	if (p >= end || *p++ != '{')
		return false;
	p = skip_ws(p, end);
	if (p < end && *p == '}')
		return true;
	for (;;) {
		const char *k, *ke, *v, *ve;

		if (p >= end || *p != '"')
			return false;
		k = p + 1;
		if (!(p = skip_string(p, end)))
			return false;
		ke = p - 1;
		p = skip_ws(p, end);
		if (p >= end || *p++ != ':')
			return false;
		v = skip_ws(p, end);
		if (!(ve = skip_value(v, end)) || !fn(arg, k, (size_t)(ke - k), v, ve))
			return false;
		p = skip_ws(ve, end);
		if (p < end && *p == ',')
			p = skip_ws(p + 1, end);
		else if (p < end && *p == '}')
			return true;
		else
			return false;
	}
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool hex4(const char *p, const char *end, unsigned *u)
{
	*u = 0;
	if (end - p < 4)
		return false;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);

		if (h < 0)
			return false;
		*u = *u << 4 | (unsigned)h;
	}
	return true;
}

/* Appends code point u as UTF-8; false when buf has no room. */
static bool put_utf8(char *buf, size_t cap, size_t *n, unsigned u)
{
	char b[4];
	size_t k;

	if (u < 0x80)
		b[0] = (char)u, k = 1;
	else if (u < 0x800)
		b[0] = (char)(0xc0 | u >> 6), b[1] = (char)(0x80 | (u & 0x3f)), k = 2;
	else if (u < 0x10000)
		b[0] = (char)(0xe0 | u >> 12), b[1] = (char)(0x80 | (u >> 6 & 0x3f)),
		b[2] = (char)(0x80 | (u & 0x3f)), k = 3;
	else
		b[0] = (char)(0xf0 | u >> 18), b[1] = (char)(0x80 | (u >> 12 & 0x3f)),
		b[2] = (char)(0x80 | (u >> 6 & 0x3f)), b[3] = (char)(0x80 | (u & 0x3f)), k = 4;
	if (*n + k >= cap)
		return false;
	memcpy(buf + *n, b, k);
	*n += k;
	return true;
}

bool record_string(const char *v, const char *ve, char *buf, size_t cap, bool truncate)
{
	size_t n = 0;
	const char *p = v + 1;

	if (v >= ve || *v != '"' || ve - v < 2 || ve[-1] != '"' || !cap)
		return false;
	ve--;
	while (p < ve) {
		unsigned u;

		if (*p != '\\') {
			if (n + 1 >= cap)
				goto full;
			buf[n++] = *p++;
			continue;
		}
		if (++p >= ve)
			return false;
		switch (*p) {
		case '"': case '\\': case '/': u = (unsigned char)*p; break;
		case 'b': u = '\b'; break;
		case 'f': u = '\f'; break;
		case 'n': u = '\n'; break;
		case 'r': u = '\r'; break;
		case 't': u = '\t'; break;
		case 'u':
			if (!hex4(p + 1, ve, &u))
				return false;
			p += 4;
			if (u >= 0xd800 && u < 0xdc00) {
				unsigned lo;

				if (ve - p < 7 || p[1] != '\\' || p[2] != 'u' || !hex4(p + 3, ve, &lo) ||
				    lo < 0xdc00 || lo >= 0xe000)
					return false;
				u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
				p += 6;
			} else if (u >= 0xdc00 && u < 0xe000) {
				return false;
			}
			break;
		default:
			return false;
		}
		p++;
		if (!put_utf8(buf, cap, &n, u))
			goto full;
	}
	buf[n] = '\0';
	return true;
full:
	buf[n] = '\0';
	return truncate;
}

bool record_uint(const char *v, const char *ve, uint64_t *out)
{
	uint64_t n = 0;

	if (v >= ve)
		return false;
	if (*v == '-') {
		/* negative counts are read as 0, as the meter takes them */
		for (v++; v < ve && *v >= '0' && *v <= '9'; v++)
			;
		*out = 0;
		return v == ve;
	}
	for (; v < ve && *v >= '0' && *v <= '9'; v++) {
		uint64_t d = (uint64_t)(*v - '0');

		n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;
	}
	*out = n;
	return v == ve;
}

bool record_bool(const char *v, const char *ve, bool *out)
{
	if (ve - v == 4 && !memcmp(v, "true", 4))
		*out = true;
	else if (ve - v == 5 && !memcmp(v, "false", 5))
		*out = false;
	else
		return false;
	return true;
}

struct member_find {
	const char *key;
	const char *v;
	size_t len;
};

static bool find_member(void *arg, const char *k, size_t kn, const char *v, const char *ve)
{
	struct member_find *f = arg;

	if (record_key_is(k, kn, f->key)) {
		f->v = v;
		f->len = (size_t)(ve - v);
	}
	return true;
}

const char *harness_record_member(const char *obj, size_t len, const char *key, size_t *vlen)
{
	struct member_find f = { .key = key };

	if (!record_scan(obj, obj + len, find_member, &f) || !f.v)
		return NULL;
	*vlen = f.len;
	return f.v;
}
