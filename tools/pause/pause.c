/* lantern-pause: the process of a pod sandbox ("pause" container) lanternd's CRI pods
 * run. It holds the pod's namespaces while the workload's container comes and goes:
 * it does nothing but wait for signals, reaps any child it inherits, and exits 0 on
 * SIGTERM or SIGINT (a stop of the pod). Built static into the pause image
 * (scripts/mkpause.sh), because nothing can be pulled on a node here. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	sigset_t set;
	int sig;

	if (argc > 1 && !strcmp(argv[1], "--version")) {
		puts("lantern-pause 1");
		return 0;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig != SIGCHLD)
			return 0;
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
}
