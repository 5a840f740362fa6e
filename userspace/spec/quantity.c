/* quantity.c: Kubernetes quantities ("500m", "256Mi", "129e6") and durations ("1h30m",
 * "250ms", a bare number of seconds) as agent.yaml writes limits.
 *
 * Numbers are kept as an exact decimal mantissa and exponent in 128-bit integers, never
 * as doubles, so "0.1" cores is exactly 100m and a byte count is never off by rounding;
 * the normalized JSON's doubles (0.10000000000000001) still come back to the same
 * value because millicores and milliseconds are rounded to the nearest unit. */
#include "spec_int.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

#define U128_MAX (~(u128)0)
#define MAX_DIGITS 36 /* significant digits a mantissa keeps; 10^36 * 10 fits in u128 */

/* A decimal number: [+-]digits[.digits] or [+-].digits, mantissa * 10^exp10. */
struct dec {
	bool neg;
	u128 mant;
	int exp10;
};

/* Reads a decimal number at *p; returns false if there is none or it is too long. */
static bool read_dec(const char **p, struct dec *d, bool allow_sign)
{
	const char *s = *p;
	int digits = 0, sig = 0;

	memset(d, 0, sizeof(*d));
	if (allow_sign && (*s == '+' || *s == '-'))
		d->neg = *s++ == '-';
	for (; isdigit((unsigned char)*s); s++, digits++) {
		if (sig || *s != '0')
			sig++;
		if (sig > MAX_DIGITS)
			return false;
		d->mant = d->mant * 10 + (u128)(*s - '0');
	}
	if (*s == '.') {
		s++;
		for (; isdigit((unsigned char)*s); s++, digits++) {
			if (sig || *s != '0')
				sig++;
			if (sig > MAX_DIGITS)
				return false;
			d->mant = d->mant * 10 + (u128)(*s - '0');
			d->exp10--;
		}
	}
	if (!digits)
		return false;
	*p = s;
	return true;
}

static bool mul_ok(u128 *n, u128 k)
{
	if (k && *n > U128_MAX / k)
		return false;
	*n *= k;
	return true;
}

/* n * 10^exp10, rounded to nearest (round) or required to be whole (!round).
 * Returns 0, -1 on overflow, -2 when !round and a fraction remains. */
static int scale10(u128 n, int exp10, bool round, u128 *out)
{
	if (exp10 >= 0) {
		for (int i = 0; i < exp10; i++)
			if (!mul_ok(&n, 10))
				return n ? -1 : 0;
		*out = n;
		return 0;
	}
	if (-exp10 > 38) {
		if (n && !round)
			return -2;
		*out = 0; /* n < 10^37 here, below half of the divisor */
		return 0;
	}
	u128 pow = 1, r;
	for (int i = 0; i < -exp10; i++)
		pow *= 10;
	r = n % pow;
	*out = n / pow;
	if (r && !round)
		return -2;
	if (round && r >= pow - r)
		(*out)++;
	return 0;
}

const char *spec_quantity(const char *s, bool milli, uint64_t *out)
{
	static const struct {
		const char *sfx;
		int exp10;
		unsigned shift;
	} sfx[] = {
		{ "Ki", 0, 10 }, { "Mi", 0, 20 }, { "Gi", 0, 30 }, { "Ti", 0, 40 },
		{ "Pi", 0, 50 }, { "Ei", 0, 60 }, { "n", -9, 0 },  { "u", -6, 0 },
		{ "m", -3, 0 },  { "", 0, 0 },    { "k", 3, 0 },   { "M", 6, 0 },
		{ "G", 9, 0 },   { "T", 12, 0 },  { "P", 15, 0 },  { "E", 18, 0 },
	};
	const char *p = s;
	struct dec d;
	u128 n;
	int exp10, rc;
	size_t i;

	if (!read_dec(&p, &d, true))
		return "is not a Kubernetes quantity";
	exp10 = d.exp10 + (milli ? 3 : 0);
	n = d.mant;
	if ((*p == 'e' || *p == 'E') &&
	    (isdigit((unsigned char)p[1]) ||
	     ((p[1] == '+' || p[1] == '-') && isdigit((unsigned char)p[2])))) {
		int sign = 1, e = 0;

		p++;
		if (*p == '+' || *p == '-')
			sign = *p++ == '-' ? -1 : 1;
		for (; isdigit((unsigned char)*p); p++)
			if (e < 1000)
				e = e * 10 + (*p - '0');
		if (*p)
			return "is not a Kubernetes quantity";
		exp10 += sign * e;
	} else {
		for (i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++)
			if (!strcmp(p, sfx[i].sfx))
				break;
		if (i == sizeof(sfx) / sizeof(sfx[0]))
			return "is not a Kubernetes quantity";
		exp10 += sfx[i].exp10;
		if (!mul_ok(&n, (u128)1 << sfx[i].shift))
			return "is too large";
	}
	rc = scale10(n, exp10, milli, &n);
	if (rc == -1)
		return "is too large";
	if (rc == -2)
		return "is not a whole number of bytes";
	if (d.neg && n)
		return "must not be negative";
	if (n > INT64_MAX)
		return "is too large";
	*out = (uint64_t)n;
	return NULL;
}

const char *spec_duration(const char *s, uint64_t *out_ms)
{
	static const struct {
		const char *unit;
		uint64_t ns;
	} units[] = {
		/* longest first so "ms" is not read as "m" */
		{ "ns", 1 }, { "us", 1000 }, { "\xc2\xb5s", 1000 }, { "ms", 1000000 },
		{ "h", 3600000000000ull }, { "m", 60000000000ull }, { "s", 1000000000ull },
	};
	const char *p = s;
	bool neg = false;
	u128 total = 0, ms;
	struct dec d;

	if (*p == '+' || *p == '-')
		neg = *p++ == '-';
	if (!*p)
		return "is not a duration (like 30s, 5m, 1h30m, 250ms)";
	/* a bare number, as YAML writes `timeout: 30` or the normalized JSON writes 0.25 */
	{
		const char *q = p;

		if (read_dec(&q, &d, false) && !*q) {
			if (scale10(d.mant, d.exp10 + 3, true, &ms))
				return "is too large";
			goto done;
		}
	}
	while (*p) {
		size_t i;
		u128 n;

		if (!read_dec(&p, &d, false))
			return "is not a duration (like 30s, 5m, 1h30m, 250ms)";
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (!strncmp(p, units[i].unit, strlen(units[i].unit)))
				break;
		if (i == sizeof(units) / sizeof(units[0]))
			return "is not a duration (like 30s, 5m, 1h30m, 250ms)";
		p += strlen(units[i].unit);
		n = d.mant;
		if (!mul_ok(&n, units[i].ns) || scale10(n, d.exp10, true, &n) ||
		    total + n < total)
			return "is too large";
		total += n;
	}
	if (scale10(total, -6, true, &ms))
		return "is too large";
done:
	if (neg && ms)
		return "must not be negative";
	if (ms > INT64_MAX)
		return "is too large";
	*out_ms = (uint64_t)ms;
	return NULL;
}
