/* lantern-clock: the spawn benchmark's workload. Its first action prints
 * CLOCK_REALTIME in nanoseconds, so the benchmark can tell when the workload's first
 * instruction ran; built static so it runs in a busybox image with no libc. */
#include <stdio.h>
#include <time.h>

int main(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	return 0;
}
