/* tap.h: the one small TAP harness every test program uses.
 * Prints TAP version 13. Under CI=true a skip caused by a missing environment (root,
 * BPF, cgroups) is reported as a failure: CI machines have them. */
#ifndef LANTERN_TAP_H
#define LANTERN_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_count, tap_failures;

static inline void tap_plan(int n)
{
	printf("TAP version 13\n1..%d\n", n);
	fflush(stdout);
}

/* For programs whose number of points depends on what they find: the version line
 * first, the plan last (tap_done_plan). */
static inline void tap_start(void)
{
	printf("TAP version 13\n");
	fflush(stdout);
}

static inline void tap_vresult(bool ok, const char *directive, const char *fmt, va_list ap)
{
	printf("%sok %d ", ok ? "" : "not ", ++tap_count);
	vprintf(fmt, ap);
	if (directive)
		printf(" # %s", directive);
	printf("\n");
	fflush(stdout);
	if (!ok)
		tap_failures++;
}

/* Records one test point; returns cond so callers can stop early. */
__attribute__((format(printf, 2, 3))) static inline bool tap_ok(bool cond, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tap_vresult(cond, NULL, fmt, ap);
	va_end(ap);
	return cond;
}

/* Skips one test point because the environment lacks something. */
__attribute__((format(printf, 2, 3))) static inline void tap_skip(const char *reason, const char *fmt, ...)
{
	char dir[256];
	const char *ci = getenv("CI");
	bool under_ci = ci && !strcmp(ci, "true");
	va_list ap;

	snprintf(dir, sizeof(dir), "%s%s", under_ci ? "missing under CI: " : "SKIP ", reason);
	va_start(ap, fmt);
	tap_vresult(!under_ci, dir, fmt, ap);
	va_end(ap);
}

static inline void tap_diag(const char *fmt, ...)
{
	va_list ap;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static inline int tap_done_plan(void)
{
	printf("1..%d\n", tap_count);
	return tap_failures ? 1 : 0;
}

/* Ends the program: exit status 1 if any point failed. */
static inline int tap_done(void)
{
	return tap_failures ? 1 : 0;
}

#endif
