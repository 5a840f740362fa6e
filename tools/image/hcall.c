/* lantern-hcall: one call to the harness API from inside an image that has no curl
 * able to speak HTTP over a Unix socket (busybox's cannot). Built static.
 *   lantern-hcall METHOD PATH [BODY]
 * Connects to $LANTERN_HARNESS_SOCKET, sends the request with Connection: close and
 * prints the whole answer (status line, headers, body). Exits 0 when the status is
 * 2xx, 1 otherwise, 2 when the socket cannot be reached. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	const char *sock = getenv("LANTERN_HARNESS_SOCKET"), *body = argc > 3 ? argv[3] : "";
	char head[1024], buf[65536];
	size_t got = 0;
	ssize_t n;
	int fd, hl, status = 0;

	if (argc < 3 || !sock || strlen(sock) >= sizeof(a.sun_path)) {
		fprintf(stderr, "usage: lantern-hcall METHOD PATH [BODY] (with LANTERN_HARNESS_SOCKET set)\n");
		return 2;
	}
	strcpy(a.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("lantern-hcall: connect");
		return 2;
	}
	hl = snprintf(head, sizeof(head),
		      "%s %s HTTP/1.1\r\nHost: lantern\r\nContent-Type: application/json\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		      argv[1], argv[2], strlen(body));
	if (hl < 0 || (size_t)hl >= sizeof(head) || write(fd, head, (size_t)hl) != hl ||
	    write(fd, body, strlen(body)) != (ssize_t)strlen(body)) {
		perror("lantern-hcall: write");
		return 2;
	}
	while (got < sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	if (!got)
		fprintf(stderr, "lantern-hcall: the connection ended with no answer (%s)\n",
			n < 0 ? strerror(errno) : "end of file");
	buf[got] = '\0';
	fwrite(buf, 1, got, stdout);
	putchar('\n');
	sscanf(buf, "HTTP/1.1 %d", &status);
	return status >= 200 && status < 300 ? 0 : 1;
}
