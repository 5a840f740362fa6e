/* netns.c: a network: none pod keeps loopback only. The node's CNI gives every pod of a
 * handler the same network (a veth on the node bridge); before anything runs in the
 * pod, every link of its network namespace that is not loopback goes, through one
 * rtnetlink socket made inside that namespace (no `ip` processes: two of those cost
 * ~10 ms on a loaded node, the socket a few hundred microseconds), and a second listing
 * shows that loopback alone is left. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netns.h"

/* a pod's namespace has loopback and the CNI's link; more than this is not a pod's */
#define NETNS_MAX_LINKS 64
#define MAX_REPLIES 4096

struct link {
	int index;
	bool loopback;
	char name[IFNAMSIZ];
};

/* A NETLINK_ROUTE socket of the network namespace at path; this process stays in
 * its own. */
static int socket_in(const char *path, char *why, size_t wlen)
{
	int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), ns = -1, fd = -1, err = 0;

	if (self < 0 || (ns = open(path, O_RDONLY | O_CLOEXEC)) < 0 || setns(ns, CLONE_NEWNET) < 0) {
		err = errno;
		snprintf(why, wlen, "cannot enter the pod's network namespace %s: %s", path, strerror(err));
	} else {
		if ((fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) < 0) {
			err = errno;
			snprintf(why, wlen, "no rtnetlink socket in %s: %s", path, strerror(err));
		}
		if (setns(self, CLONE_NEWNET) < 0) {
			/* the caller fails the create: nothing runs from the pod's namespace */
			err = errno;
			snprintf(why, wlen, "cannot return from the pod's network namespace: %s", strerror(err));
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
	}
	if (self >= 0)
		close(self);
	if (ns >= 0)
		close(ns);
	return fd >= 0 ? fd : -(err ? err : EIO);
}

static int send_req(int fd, uint16_t type, uint16_t flags, uint32_t seq, int index, char *why, size_t wlen)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = type, .nlmsg_flags = NLM_F_REQUEST | flags,
		       .nlmsg_seq = seq },
		.i = { .ifi_family = AF_UNSPEC, .ifi_index = index },
	};
	struct sockaddr_nl k = { .nl_family = AF_NETLINK };

	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&k, sizeof(k)) != (ssize_t)sizeof(req)) {
		snprintf(why, wlen, "rtnetlink: cannot send: %s", strerror(errno));
		return -EIO;
	}
	return 0;
}

/* One link of a dump: its index, name and whether it is loopback. */
static void link_of(const struct nlmsghdr *h, struct link *l)
{
	const struct ifinfomsg *i = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - NLMSG_LENGTH(sizeof(*i));
	const struct rtattr *a = IFLA_RTA(i);

	memset(l, 0, sizeof(*l));
	l->index = i->ifi_index;
	l->loopback = i->ifi_flags & IFF_LOOPBACK;
	for (; len > 0 && RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == IFLA_IFNAME)
			snprintf(l->name, sizeof(l->name), "%.*s", (int)RTA_PAYLOAD(a), (const char *)RTA_DATA(a));
}

/* The answers to request seq: a dump's links into out (at most max; -E2BIG past it),
 * or an acknowledgement (its error, 0 for none). Returns the count of links. */
static int read_answer(int fd, uint32_t seq, struct link *out, int max, int *nl_err, char *why, size_t wlen)
{
	char buf[32768] __attribute__((aligned(NLMSG_ALIGNTO)));
	int n = 0;

	*nl_err = 0;
	for (int replies = 0; replies < MAX_REPLIES; replies++) {
		ssize_t got = recv(fd, buf, sizeof(buf), MSG_TRUNC);
		int len = (int)got;

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0 || (size_t)got > sizeof(buf)) {
			snprintf(why, wlen, "rtnetlink: %s", got < 0 ? strerror(errno) : "an answer larger than expected");
			return -EIO;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_seq != seq)
				continue;
			if (h->nlmsg_type == NLMSG_DONE)
				return n;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *m = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m))) {
					snprintf(why, wlen, "rtnetlink: a short error message");
					return -EIO;
				}
				*nl_err = -m->error;
				return n;
			}
			if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
				continue;
			if (n == max) {
				snprintf(why, wlen, "more than %d network links", max);
				return -E2BIG;
			}
			link_of(h, &out[n++]);
		}
	}
	snprintf(why, wlen, "rtnetlink: no end to the answer after %d messages", MAX_REPLIES);
	return -EIO;
}

static int list_links(int fd, uint32_t seq, struct link *out, char *why, size_t wlen)
{
	int n, err;

	if (send_req(fd, RTM_GETLINK, NLM_F_DUMP, seq, 0, why, wlen) < 0)
		return -EIO;
	n = read_answer(fd, seq, out, NETNS_MAX_LINKS, &err, why, wlen);
	if (n >= 0 && err) {
		snprintf(why, wlen, "cannot list the links: %s", strerror(err));
		return -err;
	}
	return n;
}

int netns_keep_loopback(const char *path, char *why, size_t wlen)
{
	struct link links[NETNS_MAX_LINKS], dummy;
	int fd = socket_in(path, why, wlen), n, err = 0;
	uint32_t seq = 1;

	if (fd < 0)
		return fd;
	if ((n = list_links(fd, seq++, links, why, wlen)) < 0)
		goto out;
	for (int i = 0; i < n && !err; i++) {
		int nl_err;

		if (links[i].loopback)
			continue;
		/* a veth's peer goes with it; a link already gone is what was wanted */
		if (send_req(fd, RTM_DELLINK, NLM_F_ACK, seq, links[i].index, why, wlen) < 0 ||
		    read_answer(fd, seq++, &dummy, 0, &nl_err, why, wlen) < 0)
			err = -EIO;
		else if (nl_err && nl_err != ENODEV) {
			snprintf(why, wlen, "cannot remove the pod's link %s: %s", links[i].name, strerror(nl_err));
			err = -nl_err;
		}
	}
	if (err || (n = list_links(fd, seq++, links, why, wlen)) < 0)
		goto out;
	for (int i = 0; i < n; i++)
		if (!links[i].loopback) {
			snprintf(why, wlen, "the link %s is left besides loopback", links[i].name);
			err = -EPERM;
			break;
		}
out:
	close(fd);
	return err ? err : n < 0 ? n : 0;
}
