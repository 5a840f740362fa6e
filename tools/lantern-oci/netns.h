/* netns.h: the network namespace of a network: none pod (netns.c). */
#ifndef LANTERN_OCI_NETNS_H
#define LANTERN_OCI_NETNS_H

#include <stddef.h>

/* Removes every link but loopback from the network namespace at path and checks that
 * loopback alone is left. 0, or -errno with the reason in why. */
int netns_keep_loopback(const char *path, char *why, size_t wlen);

#endif
