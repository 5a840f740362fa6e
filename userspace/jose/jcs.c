/* jcs.c: RFC 8785 JSON canonicalization, the bytes a receipt or a token is signed
 * over. jansson's own output is close but not it: it sorts keys by UTF-8 bytes (JCS:
 * by UTF-16 code units, which differ above U+FFFF), escapes with uppercase hex, and
 * prints reals with 17 digits where JCS wants ECMAScript's shortest round trip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/jose.h"

struct buf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *np;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (!(np = realloc(b->p, cap))) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void put_string(struct buf *b, const char *s, size_t n)
{
	put(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];

		switch (c) {
		case '"': puts_(b, "\\\""); break;
		case '\\': puts_(b, "\\\\"); break;
		case '\b': puts_(b, "\\b"); break;
		case '\f': puts_(b, "\\f"); break;
		case '\n': puts_(b, "\\n"); break;
		case '\r': puts_(b, "\\r"); break;
		case '\t': puts_(b, "\\t"); break;
		default:
			if (c < 0x20) {
				snprintf(esc, sizeof(esc), "\\u%04x", c);
				puts_(b, esc);
			} else {
				put(b, (const char *)&s[i], 1);
			}
		}
	}
	put(b, "\"", 1);
}

/* ECMAScript's Number::toString for a finite double: the shortest digits that read
 * back to v, laid out fixed between 1e-7 and 1e21, else in exponent form. */
static void put_number(struct buf *b, double v)
{
	char tmp[40], digits[24], out[48];
	int p, n, k = 0;
	char *e;

	if (v == 0) {
		puts_(b, "0");
		return;
	}
	if (v < 0) {
		puts_(b, "-");
		v = -v;
	}
	for (p = 1; p <= 17; p++) {
		snprintf(tmp, sizeof(tmp), "%.*e", p - 1, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	for (char *c = tmp; *c && *c != 'e'; c++)
		if (*c >= '0' && *c <= '9')
			digits[k++] = *c;
	while (k > 1 && digits[k - 1] == '0')
		k--;
	digits[k] = '\0';
	e = strchr(tmp, 'e');
	n = atoi(e + 1) + 1;
	if (k <= n && n <= 21) {
		snprintf(out, sizeof(out), "%s%.*s", digits, n - k, "000000000000000000000");
	} else if (0 < n && n <= 21) {
		snprintf(out, sizeof(out), "%.*s.%s", n, digits, digits + n);
	} else if (-6 < n && n <= 0) {
		snprintf(out, sizeof(out), "0.%.*s%s", -n, "000000", digits);
	} else if (k == 1) {
		snprintf(out, sizeof(out), "%se%c%d", digits, n - 1 < 0 ? '-' : '+', abs(n - 1));
	} else {
		snprintf(out, sizeof(out), "%c.%se%c%d", digits[0], digits + 1, n - 1 < 0 ? '-' : '+',
			 abs(n - 1));
	}
	puts_(b, out);
}

/* Next UTF-16 code unit of a UTF-8 string; *pending holds a low surrogate still owed. */
static unsigned next_unit(const unsigned char **s, unsigned *pending)
{
	const unsigned char *p = *s;
	unsigned cp;

	if (*pending) {
		cp = *pending;
		*pending = 0;
		return cp;
	}
	if (p[0] < 0x80) {
		cp = p[0];
		*s += 1;
	} else if ((p[0] & 0xe0) == 0xc0) {
		cp = (p[0] & 0x1fu) << 6 | (p[1] & 0x3fu);
		*s += 2;
	} else if ((p[0] & 0xf0) == 0xe0) {
		cp = (p[0] & 0x0fu) << 12 | (p[1] & 0x3fu) << 6 | (p[2] & 0x3fu);
		*s += 3;
	} else {
		cp = (p[0] & 0x07u) << 18 | (p[1] & 0x3fu) << 12 | (p[2] & 0x3fu) << 6 | (p[3] & 0x3fu);
		*s += 4;
	}
	if (cp >= 0x10000) {
		cp -= 0x10000;
		*pending = 0xdc00 + (cp & 0x3ff);
		return 0xd800 + (cp >> 10);
	}
	return cp;
}

static int utf16_cmp(const void *a, const void *b)
{
	const unsigned char *x = *(const unsigned char *const *)a, *y = *(const unsigned char *const *)b;
	unsigned px = 0, py = 0;

	for (;;) {
		unsigned ux, uy;

		if ((!*x && !px) || (!*y && !py))
			return (*x || px) - (*y || py);
		ux = next_unit(&x, &px);
		uy = next_unit(&y, &py);
		if (ux != uy)
			return ux < uy ? -1 : 1;
	}
}

/* Depth is bounded by what jansson parsed or we built; no workload input reaches here
 * unbounded (receipts and tokens are built by lanternd). */
static void put_value(struct buf *b, const json_t *j)
{
	const char **keys;
	const char *k;
	json_t *v;
	size_t n = 0, i;

	switch (json_typeof(j)) {
	case JSON_OBJECT:
		keys = calloc(json_object_size(j) + 1, sizeof(*keys));
		if (!keys) {
			b->oom = true;
			return;
		}
		json_object_foreach((json_t *)j, k, v)
			keys[n++] = k;
		qsort(keys, n, sizeof(*keys), utf16_cmp);
		put(b, "{", 1);
		for (i = 0; i < n; i++) {
			if (i)
				put(b, ",", 1);
			put_string(b, keys[i], strlen(keys[i]));
			put(b, ":", 1);
			put_value(b, json_object_get(j, keys[i]));
		}
		put(b, "}", 1);
		free(keys);
		break;
	case JSON_ARRAY:
		put(b, "[", 1);
		json_array_foreach(j, i, v) {
			if (i)
				put(b, ",", 1);
			put_value(b, v);
		}
		put(b, "]", 1);
		break;
	case JSON_STRING:
		put_string(b, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		put_number(b, (double)json_integer_value(j));
		break;
	case JSON_REAL:
		if (!isfinite(json_real_value(j))) {
			b->oom = true;
			return;
		}
		put_number(b, json_real_value(j));
		break;
	case JSON_TRUE:
		puts_(b, "true");
		break;
	case JSON_FALSE:
		puts_(b, "false");
		break;
	case JSON_NULL:
		puts_(b, "null");
		break;
	}
}

char *jose_jcs(const json_t *j)
{
	struct buf b = { 0 };

	put_value(&b, j);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}
