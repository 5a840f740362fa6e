/* getpids: makes exactly N getpid system calls (argv[1]), for tests and benchmarks
 * that count syscalls; prints the nanoseconds per call on stdout with -t. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 0;
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		syscall(SYS_getpid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (argc > 2 && !strcmp(argv[2], "-t"))
		printf("%.2f\n", n ? ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (double)n : 0.0);
	return 0;
}
