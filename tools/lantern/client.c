/* client.c: talking to lanternd over its socket: one JSON request line out, JSON
 * answer lines back. */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lantern/util.h"

int client_open(struct cli *c, json_t *req, struct client_conn *cc)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char *s;
	size_t len, off = 0;

	memset(cc, 0, sizeof(*cc));
	cc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cc->fd < 0 || strlen(c->socket) >= sizeof(a.sun_path)) {
		fprintf(stderr, "lantern: socket %s: %s\n", c->socket, strerror(errno ? errno : ENAMETOOLONG));
		return -1;
	}
	strcpy(a.sun_path, c->socket);
	if (connect(cc->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "lantern: cannot reach lanternd at %s: %s (is it running? --socket or LANTERN_SOCKET)\n",
			c->socket, strerror(errno));
		close(cc->fd);
		return -1;
	}
	s = json_dumps(req, JSON_COMPACT);
	if (!s)
		return -1;
	len = strlen(s);
	s[len++] = '\n'; /* the NUL byte becomes the line end */
	while (off < len) {
		ssize_t w = write(cc->fd, s + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			fprintf(stderr, "lantern: writing to lanternd: %s\n", strerror(errno));
			free(s);
			return -1;
		}
		off += (size_t)w;
	}
	free(s);
	return 0;
}

json_t *client_next(struct client_conn *cc)
{
	for (;;) {
		char *nl = cc->len ? memchr(cc->buf, '\n', cc->len) : NULL;

		if (nl) {
			json_t *j = json_loadb(cc->buf, (size_t)(nl - cc->buf), 0, NULL);
			size_t used = (size_t)(nl - cc->buf) + 1;

			memmove(cc->buf, cc->buf + used, cc->len - used);
			cc->len -= used;
			if (!j) {
				fprintf(stderr, "lantern: lanternd sent a line that is not JSON\n");
				return NULL;
			}
			return j;
		}
		if (cc->len + 65536 > cc->cap) {
			char *nb = realloc(cc->buf, cc->cap = cc->len + 65536 * 2);
			if (!nb)
				return NULL;
			cc->buf = nb;
		}
		ssize_t n = read(cc->fd, cc->buf + cc->len, cc->cap - cc->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		cc->len += (size_t)n;
	}
}

void client_close(struct client_conn *cc)
{
	if (cc->fd >= 0)
		close(cc->fd);
	free(cc->buf);
	cc->buf = NULL;
	cc->fd = -1;
}

json_t *client_call(struct cli *c, json_t *req)
{
	struct client_conn cc;
	json_t *res;

	if (client_open(c, req, &cc) < 0)
		return NULL;
	res = client_next(&cc);
	client_close(&cc);
	if (!res) {
		fprintf(stderr, "lantern: lanternd closed the connection without an answer\n");
		return NULL;
	}
	if (!strcmp(json_string_value(json_object_get(res, "type")) ?: "", "error")) {
		fprintf(stderr, "lantern: %s\n", json_string_value(json_object_get(res, "error")) ?: "error");
		json_decref(res);
		return NULL;
	}
	return res;
}

int client_read_file(const char *path, char **buf, size_t *len)
{
	int err = util_read_file(path, buf, len);

	if (err < 0)
		fprintf(stderr, "lantern: %s: %s\n", path, strerror(-err));
	return err;
}
