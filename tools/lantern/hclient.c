/* hclient.c: the CLI's side of the harness API, from inside a workload: one HTTP/1.1
 * exchange on the harness socket ($LANTERN_HARNESS_SOCKET), for `lantern step` and
 * `lantern secrets`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"

/* To the harness socket: a lanternd that went away is an error to retry, not SIGPIPE. */
static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* See cli.h. */
int harness_http(const char *sock, const char *method, const char *path, const char *body,
		 const char *headers, int *status, json_t **resp)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char head[1024], *buf = NULL, *hend;
	size_t len = 0, cap = 0, clen;
	int fd, hl;
	const char *cl;

	if (strlen(sock) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int err = errno;
		close(fd);
		return err == ECONNREFUSED || err == ENOENT ? -EAGAIN : -err;
	}
	hl = snprintf(head, sizeof(head),
		      "%s %s HTTP/1.1\r\nHost: lantern\r\nContent-Type: application/json\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
		      method, path, body ? strlen(body) : 0, headers ? headers : "");
	if (hl < 0 || (size_t)hl >= sizeof(head)) {
		close(fd);
		return -E2BIG;
	}
	if (send_all(fd, head, (size_t)hl) < 0 || (body && send_all(fd, body, strlen(body)) < 0)) {
		close(fd);
		return -EAGAIN;
	}
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);
			if (!nb) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (!buf)
		return -EAGAIN;
	buf[len] = '\0';
	hend = strstr(buf, "\r\n\r\n");
	if (!hend || sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
		free(buf);
		return -EAGAIN;
	}
	cl = strcasestr(buf, "\r\nContent-Length:");
	clen = cl && cl < hend ? strtoul(cl + 17, NULL, 10) : 0;
	if (len < (size_t)(hend + 4 - buf) + clen) {
		free(buf); /* cut before the whole answer: lanternd went away */
		return -EAGAIN;
	}
	*resp = json_loadb(hend + 4, clen, 0, NULL);
	free(buf);
	return *resp ? 0 : -EBADMSG;
}

