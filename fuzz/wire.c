/* wire.c (fuzz target "wire"): lanternd's side of the link to lantern-wire, the
 * unprivileged helper that parses what workloads send (userspace/wire). The helper is
 * assumed taken over by a workload, so every byte it sends is hostile: the framing and
 * descriptor passing of link.c on a socketpair in a private event loop, then each
 * message as edge.c reads it: a harness call (wire_get_call) decided on and recorded as
 * durable does; a DNS question turned into lanternd's own query (dns_ask_build); the
 * other messages' fields.
 *
 * Input: a byte of flags (bits 0-1: descriptors sent with the first bytes), then the
 * bytes lantern-wire writes. Each input starts a run with step "s" in flight.
 *
 * Properties beyond the sanitizers:
 *  - the link ends (down) once the helper closes its side, whatever it sent;
 *  - a call lanternd accepts cannot say more than its fields: the record decided on
 *    applies, changes the step it names as decided, and its result or output member
 *    (harness_record_member) is exactly the value's bytes (a value that closed the
 *    record's object early would add members of the helper's choosing);
 *  - a query built from a question parses, with the question's name, type and class. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzzlib.h"
#include "lantern/dns.h"
#include "lantern/dns_wire.h"
#include "lantern/harness.h"
#include "lantern/journal.h"
#include "lantern/wire.h"

static struct loop *loop;
static struct harness_state st;
static uint64_t next_off;
static bool down;

static void apply(unsigned type, const char *text, size_t len)
{
	struct lerr e = { 0 };

	FZ_CHECK(harness_state_apply(&st, type, text, len, next_off, &e) == 0,
		 "the %s record decided on does not apply: %s: %.*s", journal_type_name(type), e.msg,
		 (int)len, text);
	next_off += JOURNAL_FRAME + JOURNAL_HEADER + len;
}

static void on_call(struct wire_msg *m)
{
	static const struct harness_limits lim = { .max_steps = 8, .loop_threshold = 3 };
	struct harness_call c;
	struct harness_decision d = { 0 };
	struct harness_step *s;
	char why[256];
	const char *v;
	size_t vlen;

	wire_get_u64(m);
	wire_get_u64(m);
	wire_get_u32(m);
	if (wire_get_call(m, &c, why, sizeof(why)) < 0) {
		harness_call_free(&c);
		return;
	}
	switch (c.op) {
	case HOP_BEGIN: harness_begin(&st, &lim, &c, &d); break;
	case HOP_COMPLETE: harness_complete(&st, &c, 0.5, &d); break;
	case HOP_FAIL: harness_fail(&st, &c, &d); break;
	case HOP_OUTPUT: harness_output(&c, &d); break;
	default: break;
	}
	if ((d.v == HV_RECORD || d.v == HV_PROCEED) && d.record) {
		/* complete and output write the value; a value on another call is ignored */
		if (c.value && (c.op == HOP_COMPLETE || c.op == HOP_OUTPUT)) {
			/* the scanner's span starts after the value's leading whitespace */
			size_t ws = strspn(c.value, " \t\r\n");

			v = harness_record_member(d.record, d.record_len,
						  c.op == HOP_OUTPUT ? "output" :
						  c.value_b64 ? "result_b64" : "result", &vlen);
			FZ_CHECK(v && vlen == c.value_len - ws && !memcmp(v, c.value + ws, vlen),
				 "a value from lantern-wire changed the record around it: %s", d.record);
		}
		apply(d.type, d.record, d.record_len);
		if (c.op != HOP_OUTPUT) {
			s = harness_state_step(&st, c.step_id);
			FZ_CHECK(s && s->attempt == d.attempt &&
				 s->state == (c.op == HOP_BEGIN ? HSTEP_STARTED :
					      c.op == HOP_COMPLETE ? HSTEP_COMPLETED : HSTEP_FAILED),
				 "step \"%s\" after its record: state %d attempt %u, decided %u", c.step_id,
				 s ? s->state : 0, s ? s->attempt : 0, d.attempt);
		}
	}
	free(d.record);
	harness_call_free(&c);
}

static void on_dns(struct wire_msg *m)
{
	char qname[DNS_WIRE_NAME_MAX + 1], text[DNS_WIRE_NAME_MAX + 1];
	uint8_t query[DNS_ASK_QUERY_MAX];
	struct dns_wire_question q;
	uint16_t qtype, qclass;
	size_t len;

	wire_get_u64(m);
	if (m->type == WIRE_DNS_ASK)
		wire_get_u64(m);
	wire_get_str(m, qname, sizeof(qname));
	qtype = wire_get_u16(m);
	if (m->type == WIRE_DNS_REFUSED)
		return;
	qclass = wire_get_u16(m);
	wire_get_u8(m);
	if (!wire_msg_done(m) || !(len = dns_ask_build(query, qname, qtype, qclass)))
		return;
	FZ_CHECK(len <= sizeof(query) && dns_wire_query_parse(query, len, &q) == 0,
		 "the query built for \"%s\" does not parse", qname);
	dns_wire_name_text(q.name, text);
	FZ_CHECK(!strcmp(text, qname) && q.type == qtype && q.class == qclass,
		 "the query built for \"%s\" %u/%u asks \"%s\" %u/%u", qname, qtype, qclass, text,
		 q.type, q.class);
}

static void on_msg(void *arg, struct wire_msg *m)
{
	int fd;

	switch (m->type) {
	case WIRE_CALL: on_call(m); break;
	case WIRE_DNS_ASK:
	case WIRE_DNS_REFUSED: on_dns(m); break;
	default:
		wire_get_u64(m);
		wire_get_u64(m);
		wire_msg_done(m);
	}
	while ((fd = wire_take_fd(m)) >= 0)
		close(fd);
}

static void on_down(void *arg, const char *why)
{
	down = true;
	loop_stop(loop);
}

static void stalled(struct loop *l, void *arg)
{
	FZ_CHECK(false, "the link is not down 5 s after lantern-wire closed its side");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	loop = loop_new();
	FZ_CHECK(loop, "loop_new");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char started[] = "{\"created\":1,\"input\":{},\"instance_id\":\"i\",\"run_id\":\"r\",\"spec\":{}}";
	static const char step[] = "{\"attempt\":1,\"idempotency_key\":\"k\",\"kind\":\"llm\",\"step_id\":\"s\"}";
	struct fz f = { data, size };
	unsigned nfds = fz_u8(&f) & 3;
	struct wire_link *k;
	struct lerr e = { 0 };
	const uint8_t *bytes;
	size_t len, off = 0;
	uint64_t timer;
	int sv[2];

	harness_state_init(&st);
	next_off = JOURNAL_MAGIC_LEN;
	apply(JOURNAL_RUN_STARTED, started, strlen(started));
	apply(JOURNAL_STEP_STARTED, step, strlen(step));
	down = false;
	bytes = fz_rest(&f, &len);
	FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
		 strerror(errno));
	FZ_CHECK(wire_link_open(loop, sv[0], on_msg, on_down, NULL, &k, &e) == 0, "%s", e.msg);
	/* what the helper writes, with nfds descriptors on its first byte; the socket takes
	 * a few hundred KiB before the loop reads, far more than an input holds */
	if (len) {
		char cbuf[CMSG_SPACE(sizeof(int) * 3)] = { 0 };
		struct iovec iov = { (void *)bytes, len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		int fds[3] = { -1, -1, -1 };

		if (nfds) {
			struct cmsghdr *cm;

			for (unsigned i = 0; i < nfds; i++)
				fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
			mh.msg_control = cbuf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
		}
		while (off < len) {
			ssize_t w = sendmsg(sv[1], &mh, MSG_NOSIGNAL);

			if (w <= 0)
				break;
			off += (size_t)w;
			iov.iov_base = (char *)bytes + off;
			iov.iov_len = len - off;
			mh.msg_control = NULL;
			mh.msg_controllen = 0;
		}
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
	}
	close(sv[1]);
	timer = loop_timer_add(loop, 5000, stalled, NULL);
	loop_run(loop);
	loop_timer_cancel(loop, timer);
	FZ_CHECK(down, "the loop stopped with the link up");
	wire_link_close(k);
	harness_state_free(&st);
	return 0;
}
