/* json_wipe.c: jansson that zeroes what it frees, for the moments a document holds a
 * secret (util.h). Apart from util.c: the shim links that one and must need only libc.
 * The switch is process-wide; a thread freeing a jansson block meanwhile only has it
 * zeroed first (both frees take plain malloc'd blocks). */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lantern/util.h"

static bool json_wiping;

static void wipe_free(void *p)
{
	if (!p)
		return;
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

bool util_json_wipe(bool on)
{
	bool was = json_wiping;

	json_wiping = on;
	json_set_alloc_funcs(malloc, on ? wipe_free : free);
	return was;
}

void util_json_wipe_restore(bool was)
{
	util_json_wipe(was);
}
