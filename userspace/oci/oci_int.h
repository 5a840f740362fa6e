/* oci_int.h: what the oci module's files share and nobody else needs. */
#ifndef LANTERN_OCI_INT_H
#define LANTERN_OCI_INT_H

#include <stddef.h>

/* Runs argv (absolute path) with envp (NULL: ours) and stdin from in (NULL: /dev/null),
 * capturing stdout and stderr into out (cap bytes, NUL-terminated). Returns the exit
 * status, or -errno. */
int oci_exec(char *const argv[], char *const envp[], const char *in, char *out, size_t cap);

#endif
