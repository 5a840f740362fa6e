/* client.h: the CLI's connection to lanternd's socket. */
#ifndef LANTERN_CLIENT_H
#define LANTERN_CLIENT_H

#include <jansson.h>
#include <stddef.h>

#include "cli.h"

struct client_conn {
	int fd;
	char *buf;
	size_t len, cap;
};

/* Connects and sends req; prints why on failure. */
int client_open(struct cli *c, json_t *req, struct client_conn *cc);
/* Next answer line, or NULL at end of stream. */
json_t *client_next(struct client_conn *cc);
void client_close(struct client_conn *cc);
/* One request, one answer; an error answer is printed and NULL returned. */
json_t *client_call(struct cli *c, json_t *req);
int client_read_file(const char *path, char **buf, size_t *len);

#endif
