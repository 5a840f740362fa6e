/* kubelet.h: a test kubelet. No kubelet can run on the machines the tests run on; this
 * one does, for the pods of one node in the test API server (kubelib.h), what a kubelet
 * does through containerd's CRI (lanternd's own client, include/lantern/cri.h):
 *
 *   - every 50 ms it lists the API server's pods whose spec.nodeName is its node;
 *   - a new pod: RunPodSandbox with the handler its runtimeClassName names (RuntimeClass
 *     lantern-<class> has handler lantern-<class>, deploy/daemonset/runtimeclasses.yaml),
 *     its name, namespace, uid, labels, annotations and hostname, a log directory, and the
 *     cgroup parent a kubelet with the cgroupfs driver gives, /kubepods/pod<uid>; then
 *     CreateContainer and StartContainer for its one container: image, command and args
 *     (none: the image's Entrypoint and Cmd, as containerd applies them), env (plain
 *     values), volumeMounts from the pod's volumes (hostPath Directory, File and unset:
 *     a bind of the host path; emptyDir: a directory of its own per pod, medium Memory
 *     too), readOnly, and the memory and cpu limits;
 *   - reports to the pod's status (POST /_test/pods/NS/NAME/status): Running with
 *     containerStatuses[].state.running once started; terminated with the exit code
 *     (reason OOMKilled, Completed or Error) and phase Succeeded or Failed when the
 *     container ends; waiting CreateContainerError (RunPodSandbox, CreateContainer
 *     failed) or RunContainerError (StartContainer failed) with containerd's message,
 *     the phase left Pending;
 *   - a pod gone from the API server or with a deletionTimestamp: StopContainer (its
 *     terminationGracePeriodSeconds, at most 10 s), StopPodSandbox, RemovePodSandbox, and
 *     its pod cgroup's (empty) directories; at its stop, kubepods' when empty.
 *
 * What it does not do that a kubelet does: no retries or backoff (a pod that failed to
 * start stays so until deleted), no image pulls (the images are imported), no probes,
 * init containers, restarts, secrets, configMaps, projected volumes or valueFrom env,
 * no events, no admission of its own, no pod cgroup of its own (it does not make the
 * parent it names: runc does for a handler that is not lantern's; lantern-oci moves each
 * container of a lantern-<class> handler into its run's instance), one container per pod. Its security context is the one cri_create_container always asks for. */
#ifndef LANTERN_TEST_KUBELET_H
#define LANTERN_TEST_KUBELET_H

#include <pthread.h>
#include <stdbool.h>

#include "kubelib.h"

#define TL_KUBELET_PODS 64

struct tl_kubelet_pod {
	char ns[64], name[128], uid[64];
	char sandbox[80], container[80];     /* containerd's ids ("" until made) */
	char cgroup_parent[128];             /* what RunPodSandbox asked for */
	bool started;                        /* StartContainer answered */
	bool ended;                          /* the container exited: exit_code, oom */
	bool failed;                         /* could not start: error */
	bool gone;                           /* deleted: its sandbox stopped and removed */
	int exit_code;
	bool oom;
	char error[512];
	int grace_s;
	unsigned seq;
};

struct tl_kubelet {
	struct tl_kube *k;
	char node[64];
	char endpoint[512];
	char dir[320];                       /* T.dir/kubelet: pod logs and emptyDirs */
	pthread_t th;
	pthread_mutex_t mu;
	bool run, started;
	unsigned seq;
	struct tl_kubelet_pod pods[TL_KUBELET_PODS];
};

/* Starts the kubelet thread for node against containerd at endpoint (unix://...). */
int tl_kubelet_start(struct tl_kubelet *kl, struct tl_kube *k, const char *node, const char *endpoint);
/* Stops the thread, then stops and removes every sandbox it made and has not removed. */
void tl_kubelet_stop(struct tl_kubelet *kl);

enum tl_kubelet_until { TL_KUBELET_STARTED, TL_KUBELET_ENDED, TL_KUBELET_FAILED, TL_KUBELET_GONE };
/* Waits up to ms until the newest pod ns/name has reached until (STARTED: started;
 * ENDED: its container exited; FAILED: it could not start; GONE: torn down); a copy in
 * *out (may be NULL) either way. False on timeout. */
bool tl_kubelet_wait(struct tl_kubelet *kl, const char *ns, const char *name, enum tl_kubelet_until until,
		     struct tl_kubelet_pod *out, int ms);

#endif
