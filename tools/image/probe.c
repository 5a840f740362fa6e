/* lantern-probe: a workload for tests whose very first actions are the ones asked, in
 * order, each printing one line: "connect ADDR:PORT" (TCP; "ok" or the errno's text),
 * "read FILE" (its first line), "clock" (CLOCK_REALTIME in ns). Built static so it
 * runs in a busybox image with no libc.
 *   lantern-probe [connect A:P | read FILE | clock]... */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

static void probe_connect(const char *ap)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(ap, ':');
	int fd;

	if (!colon || (size_t)(colon - ap) >= sizeof(host)) {
		printf("connect %s: bad address\n", ap);
		return;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - ap), ap);
	a.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		printf("connect %s: bad address\n", ap);
		return;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		printf("connect %s: %s\n", ap, strerror(errno));
	else
		printf("connect %s: ok\n", ap);
	if (fd >= 0)
		close(fd);
}

static void probe_read(const char *path)
{
	char line[4096] = "";
	FILE *f = fopen(path, "r");

	if (!f) {
		printf("read %s: %s\n", path, strerror(errno));
		return;
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\n")] = '\0';
	printf("read %s: %s\n", path, line);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "clock")) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			printf("clock %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
		} else if (!strcmp(argv[i], "connect") && i + 1 < argc) {
			probe_connect(argv[++i]);
		} else if (!strcmp(argv[i], "read") && i + 1 < argc) {
			probe_read(argv[++i]);
		} else {
			printf("%s: unknown probe\n", argv[i]);
			return 2;
		}
		fflush(stdout);
	}
	return 0;
}
