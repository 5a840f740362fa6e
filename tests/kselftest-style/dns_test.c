/* dns_test.c: the FQDN proxy (userspace/dns). First its wire codec on hand-built
 * messages (names, compression loops and the pointer bound, malformed and truncated
 * messages, CNAME chains, random damage); then the server against a real dnsmasq on
 * loopback, with a small DNS client written here: allow and refuse, answers reported
 * before the reply, CNAME chains, AAAA, truncation and the TCP retry, malformed queries, a
 * dead or silent upstream, a failing owner, many queries at once, a TCP client flooding
 * while another asks over UDP, and a TCP client that never reads. No packet leaves the
 * machine. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/dns.h"
#include "lantern/dns_wire.h"
#include "lantern/loop.h"
#include "lantern/util.h"
#include "tap.h"
#include "testlib.h"

#define BIG_RECORDS 40
#define TTL 300
#define MANY 200
#define OVER_LIMIT 258 /* the server keeps 256 in flight */

static char tmpdir[64];

/* ---- what the server told its owner (written on the loop thread) ---- */

struct seen {
	char qname[256];
	uint8_t addr[16];
	uint32_t ttl;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct seen answers[4096];
static size_t n_answers;
static struct {
	char qname[256];
	uint16_t qtype;
} refusals[64];
static size_t n_refusals;

static const char *const allowed_names[] = { "allowed.test", "c1.test", "big.test", "fail.test" };

static bool cb_allowed(void *ctx, const char *qname)
{
	for (size_t i = 0; i < ARRAY_SIZE(allowed_names); i++)
		if (!strcmp(qname, allowed_names[i]))
			return true;
	return false;
}

static int cb_answer(void *ctx, const char *qname, const uint8_t addr[16], uint32_t ttl)
{
	pthread_mutex_lock(&mu);
	if (n_answers < ARRAY_SIZE(answers)) {
		snprintf(answers[n_answers].qname, sizeof(answers[0].qname), "%s", qname);
		memcpy(answers[n_answers].addr, addr, 16);
		answers[n_answers].ttl = ttl;
		n_answers++;
	}
	pthread_mutex_unlock(&mu);
	return strcmp(qname, "fail.test") ? 0 : -ENOSPC;
}

static void cb_refused(void *ctx, const char *qname, uint16_t qtype)
{
	pthread_mutex_lock(&mu);
	if (n_refusals < ARRAY_SIZE(refusals)) {
		snprintf(refusals[n_refusals].qname, sizeof(refusals[0].qname), "%s", qname);
		refusals[n_refusals].qtype = qtype;
		n_refusals++;
	}
	pthread_mutex_unlock(&mu);
}

/* Did the owner see addr (16 bytes) for qname with ttl? */
static bool seen_answer(const char *qname, const uint8_t addr[16], uint32_t ttl)
{
	bool found = false;

	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < n_answers && !found; i++)
		found = !strcmp(answers[i].qname, qname) && !memcmp(answers[i].addr, addr, 16) &&
			answers[i].ttl == ttl;
	pthread_mutex_unlock(&mu);
	return found;
}

static size_t count_answers(const char *qname)
{
	size_t n = 0;

	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < n_answers; i++)
		n += !strcmp(answers[i].qname, qname);
	pthread_mutex_unlock(&mu);
	return n;
}

static bool seen_refusal(const char *qname, uint16_t qtype)
{
	bool found = false;

	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < n_refusals && !found; i++)
		found = !strcmp(refusals[i].qname, qname) && refusals[i].qtype == qtype;
	pthread_mutex_unlock(&mu);
	return found;
}

/* ---- the test's own DNS client ---- */

struct resp {
	uint16_t id;
	int rcode;
	bool tc, qr;
	int qdcount, ancount, n_addr, n_cname;
	uint8_t addr[64][16];
	uint32_t ttl[64];
};

static size_t build_query(uint8_t *buf, uint16_t id, const char *name, uint16_t qtype)
{
	size_t o = 12;
	const char *p = name;

	memset(buf, 0, 12);
	buf[0] = (uint8_t)(id >> 8);
	buf[1] = (uint8_t)id;
	buf[2] = 0x01; /* RD */
	buf[5] = 1;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);

		buf[o++] = (uint8_t)l;
		memcpy(buf + o, p, l);
		o += l;
		p += l;
		if (*p == '.')
			p++;
	}
	buf[o++] = 0;
	buf[o++] = (uint8_t)(qtype >> 8);
	buf[o++] = (uint8_t)qtype;
	buf[o++] = 0;
	buf[o++] = 1;
	return o;
}

static int skip_name(const uint8_t *m, size_t len, size_t *off)
{
	while (*off < len) {
		uint8_t c = m[*off];

		if ((c & 0xc0) == 0xc0) {
			*off += 2;
			return 0;
		}
		*off += 1 + (size_t)c;
		if (!c)
			return 0;
	}
	return -1;
}

static int parse_resp(const uint8_t *m, size_t len, struct resp *r)
{
	size_t off = 12;

	memset(r, 0, sizeof(*r));
	if (len < 12)
		return -1;
	r->id = (uint16_t)(m[0] << 8 | m[1]);
	r->qr = m[2] & 0x80;
	r->tc = m[2] & 0x02;
	r->rcode = m[3] & 0x0f;
	r->qdcount = m[4] << 8 | m[5];
	r->ancount = m[6] << 8 | m[7];
	for (int i = 0; i < r->qdcount; i++) {
		if (skip_name(m, len, &off) < 0)
			return -1;
		off += 4;
	}
	for (int i = 0; i < r->ancount; i++) {
		uint16_t type, rdlen;

		if (skip_name(m, len, &off) < 0 || off + 10 > len)
			return r->tc ? 0 : -1;
		type = (uint16_t)(m[off] << 8 | m[off + 1]);
		rdlen = (uint16_t)(m[off + 8] << 8 | m[off + 9]);
		if (off + 10 + rdlen > len)
			return r->tc ? 0 : -1;
		if ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16)) {
			uint8_t *a = r->addr[r->n_addr];

			if (r->n_addr == 64)
				return -1;
			memset(a, 0, 16);
			if (type == 1) {
				a[10] = a[11] = 0xff;
				memcpy(a + 12, m + off + 10, 4);
			} else {
				memcpy(a, m + off + 10, 16);
			}
			r->ttl[r->n_addr++] = (uint32_t)m[off + 4] << 24 | (uint32_t)m[off + 5] << 16 |
					      (uint32_t)m[off + 6] << 8 | m[off + 7];
		}
		if (type == 5)
			r->n_cname++;
		off += 10 + rdlen;
	}
	return 0;
}

static socklen_t loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*a);
	}
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

	a6->sin6_family = AF_INET6;
	a6->sin6_port = htons(port);
	a6->sin6_addr = in6addr_loopback;
	return sizeof(*a6);
}

static int udp_socket(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, port, &ss);
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int wait_in(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1 ? 0 : -1;
}

/* Sends msg over UDP and waits up to ms for the reply; returns its length or -1. */
static ssize_t udp_raw(int family, uint16_t port, const uint8_t *msg, size_t len, uint8_t *out,
		       int ms)
{
	int fd = udp_socket(family, port);
	ssize_t n = -1;

	if (fd < 0)
		return -1;
	if (send(fd, msg, len, 0) == (ssize_t)len && wait_in(fd, ms) == 0)
		n = recv(fd, out, 65535, 0);
	close(fd);
	return n;
}

static int read_full(int fd, uint8_t *buf, size_t len, int ms)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n;

		if (wait_in(fd, ms) < 0)
			return -1;
		n = read(fd, buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static int tcp_connect(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads one framed message from a TCP connection; returns its length or -1. */
static ssize_t tcp_read_msg(int fd, uint8_t *out, int ms)
{
	uint8_t l[2];
	size_t len;

	if (read_full(fd, l, 2, ms) < 0)
		return -1;
	len = (size_t)(l[0] << 8 | l[1]);
	if (read_full(fd, out, len, ms) < 0)
		return -1;
	return (ssize_t)len;
}

static ssize_t tcp_raw(int family, uint16_t port, const uint8_t *msg, size_t len, uint8_t *out,
		       int ms)
{
	int fd = tcp_connect(family, port);
	uint8_t frame[2 + 65535];
	ssize_t n = -1;

	if (fd < 0)
		return -1;
	frame[0] = (uint8_t)(len >> 8);
	frame[1] = (uint8_t)len;
	memcpy(frame + 2, msg, len);
	if (write(fd, frame, len + 2) == (ssize_t)(len + 2))
		n = tcp_read_msg(fd, out, ms);
	close(fd);
	return n;
}

/* One question over UDP or TCP; fills r. Returns 0 or -1 (no or unreadable reply). */
static int ask(bool tcp, int family, uint16_t port, const char *name, uint16_t qtype,
	       struct resp *r)
{
	uint8_t q[512], out[65536];
	uint16_t id = (uint16_t)(random() & 0xffff);
	size_t len = build_query(q, id, name, qtype);
	ssize_t n = tcp ? tcp_raw(family, port, q, len, out, 5000)
			: udp_raw(family, port, q, len, out, 5000);

	if (n < 0 || parse_resp(out, (size_t)n, r) < 0 || r->id != id || !r->qr)
		return -1;
	return 0;
}

/* Every address in r was reported for qname with the reply's TTL. Checked when the reply
 * is in hand, so a report that came after the reply was sent would be missing. */
static bool all_reported(const char *qname, const struct resp *r)
{
	for (int i = 0; i < r->n_addr; i++)
		if (!seen_answer(qname, r->addr[i], r->ttl[i]))
			return false;
	return true;
}

static bool has_addr(const struct resp *r, int family, const char *text)
{
	uint8_t a[16] = { 0 };

	if (family == AF_INET) {
		a[10] = a[11] = 0xff;
		inet_pton(AF_INET, text, a + 12);
	} else {
		inet_pton(AF_INET6, text, a);
	}
	for (int i = 0; i < r->n_addr; i++)
		if (!memcmp(r->addr[i], a, 16))
			return true;
	return false;
}

/* ---- the wire codec on its own: hand-built messages, no sockets ---- */

struct mb {
	uint8_t b[65536];
	size_t n;
};

static void mb_put(struct mb *m, const void *p, size_t n)
{
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void mb_u16(struct mb *m, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	mb_put(m, b, 2);
}

static void mb_u32(struct mb *m, uint32_t v)
{
	mb_u16(m, (uint16_t)(v >> 16));
	mb_u16(m, (uint16_t)v);
}

/* Appends name uncompressed; returns its offset. */
static size_t mb_name(struct mb *m, const char *name)
{
	size_t at = m->n;

	for (const char *p = name; *p;) {
		size_t l = strcspn(p, ".");

		m->b[m->n++] = (uint8_t)l;
		mb_put(m, p, l);
		p += l + (p[l] == '.');
	}
	m->b[m->n++] = 0;
	return at;
}

static void mb_ptr(struct mb *m, size_t target)
{
	mb_u16(m, (uint16_t)(0xc000 | target));
}

static void mb_hdr(struct mb *m, uint16_t id, uint8_t f2, uint8_t f3, uint16_t qd, uint16_t an)
{
	m->n = 0;
	mb_u16(m, id);
	m->b[m->n++] = f2;
	m->b[m->n++] = f3;
	mb_u16(m, qd);
	mb_u16(m, an);
	mb_u32(m, 0);
}

/* One record: owner at a pointer, then type, class IN, ttl and rdata. */
static void mb_rr(struct mb *m, size_t owner, uint16_t type, uint32_t ttl, const void *rdata,
		  uint16_t rdlen)
{
	mb_ptr(m, owner);
	mb_u16(m, type);
	mb_u16(m, DNS_CLASS_IN);
	mb_u32(m, ttl);
	mb_u16(m, rdlen);
	mb_put(m, rdata, rdlen);
}

struct got {
	int n;
	uint8_t addr[8][16];
	uint32_t ttl[8];
	int fail_at;
};

static int got_addr(void *ctx, const uint8_t addr[16], uint32_t ttl)
{
	struct got *g = ctx;

	if (g->n == g->fail_at)
		return -ENOSPC;
	if (g->n < 8) {
		memcpy(g->addr[g->n], addr, 16);
		g->ttl[g->n] = ttl;
	}
	g->n++;
	return 0;
}

static bool got_has(const struct got *g, int family, const char *text, uint32_t ttl)
{
	uint8_t a[16] = { 0 };

	if (family == AF_INET) {
		a[10] = a[11] = 0xff;
		inet_pton(AF_INET, text, a + 12);
	} else {
		inet_pton(AF_INET6, text, a);
	}
	for (int i = 0; i < g->n && i < 8; i++)
		if (!memcmp(g->addr[i], a, 16) && g->ttl[i] == ttl)
			return true;
	return false;
}

static int name_at(const struct mb *m, size_t off, bool ptr, char *text)
{
	uint8_t name[DNS_WIRE_NAME_MAX];
	size_t len;
	int err = dns_wire_name_read(m->b, m->n, &off, ptr, name, &len);

	if (!err)
		dns_wire_name_text(name, text);
	return err;
}

static void test_wire_names(void)
{
	struct mb m = { .n = 12 };
	char text[DNS_WIRE_NAME_MAX + 1];
	uint8_t name[DNS_WIRE_NAME_MAX];
	size_t a, b, off, len;
	bool ok;

	a = mb_name(&m, "WWW.Example.TEST");
	b = m.n;
	m.b[m.n++] = 3;
	mb_put(&m, "api", 3);
	mb_ptr(&m, a + 4); /* "example.test" inside the first name */
	off = b;
	ok = dns_wire_name_read(m.b, m.n, &off, true, name, &len) == 0 && off == m.n &&
	     len == 18 && dns_wire_name_text(name, text) && !strcmp(text, "api.example.test") &&
	     name_at(&m, a, false, text) == 0 && !strcmp(text, "www.example.test");
	tap_ok(ok, "wire: names decode lowercase; a compressed one ends after its pointer (%s)", text);

	ok = name_at(&m, b, false, text) == -EBADMSG;
	m.n = 12;
	mb_ptr(&m, 12); /* itself */
	ok = ok && name_at(&m, 12, true, text) == -EBADMSG;
	m.n = 12;
	mb_ptr(&m, 14); /* forward, to a pointer back here */
	mb_ptr(&m, 12);
	ok = ok && name_at(&m, 12, true, text) == -EBADMSG && name_at(&m, 14, true, text) == -EBADMSG;
	tap_ok(ok, "wire: compression loops (self, forward) and pointers in a query are -EBADMSG");

	/* a root label, then pointers each to the one before: 127 hops are a name, 128 not */
	m.n = 12;
	m.b[m.n++] = 0;
	for (int i = 0; i < 200; i++)
		mb_ptr(&m, i ? 13 + 2 * (size_t)(i - 1) : 12);
	ok = name_at(&m, 13 + 2 * 126, true, text) == 0 && !strcmp(text, "") &&
	     name_at(&m, 13 + 2 * 127, true, text) == -EBADMSG &&
	     name_at(&m, 13 + 2 * 199, true, text) == -EBADMSG;
	tap_ok(ok, "wire: a name may follow %d compression pointers, not one more", DNS_WIRE_PTR_MAX);

	m.n = 12;
	mb_name(&m, "abc.test");
	ok = dns_wire_name_read(m.b, m.n - 1, &(size_t){ 12 }, true, name, &len) == -EBADMSG &&
	     dns_wire_name_read(m.b, m.n - 3, &(size_t){ 12 }, true, name, &len) == -EBADMSG;
	m.b[12] = 0x40; /* extended label type */
	ok = ok && name_at(&m, 12, true, text) == -EBADMSG;
	m.b[12] = 0x80;
	ok = ok && name_at(&m, 12, true, text) == -EBADMSG;
	m.n = 12;
	for (int i = 0; i < 5; i++) { /* 5 x 51 labels = 260 bytes with the root */
		m.b[m.n++] = 50;
		memset(m.b + m.n, 'a', 50);
		m.n += 50;
	}
	m.b[m.n++] = 0;
	ok = ok && name_at(&m, 12, true, text) == -EBADMSG;
	m.b[12 + 4 * 51] = 45; /* 4 x 51 + 46 + 1 = 251: fits */
	memmove(m.b + 12 + 4 * 51 + 46, m.b + 12 + 5 * 51, 1);
	m.n = 12 + 4 * 51 + 47;
	ok = ok && name_at(&m, 12, true, text) == 0;
	tap_ok(ok, "wire: truncated names, reserved label types and names over 255 bytes are -EBADMSG");

	m.n = 12;
	m.b[m.n++] = 3;
	mb_put(&m, "a.b", 3); /* one label */
	m.b[m.n++] = 0;
	ok = dns_wire_name_read(m.b, m.n, &(size_t){ 12 }, false, name, &len) == 0 &&
	     !dns_wire_name_text(name, text) && !strcmp(text, "a?b");
	tap_ok(ok, "wire: a label holding '.' is not a clean hostname (%s)", text);
}

static void test_wire_query(void)
{
	struct dns_wire_question q;
	uint8_t msg[512], out[DNS_WIRE_ERR_MAX];
	size_t len = build_query(msg, 0xbeef, "Allowed.Test", DNS_TYPE_AAAA), n;
	char text[DNS_WIRE_NAME_MAX + 1];
	bool ok;

	ok = dns_wire_query_parse(msg, len, &q) == 0 && q.type == DNS_TYPE_AAAA &&
	     q.class == DNS_CLASS_IN && q.end == len && dns_wire_name_text(q.name, text) &&
	     !strcmp(text, "allowed.test");
	tap_ok(ok, "wire: a query parses: type, class, end, canonical name");

	ok = dns_wire_query_parse(msg, 2, &q) == -EBADMSG &&
	     dns_wire_query_parse(msg, 11, &q) == DNS_RCODE_FORMERR &&
	     dns_wire_query_parse(msg, len - 1, &q) == DNS_RCODE_FORMERR;
	msg[2] |= 0x80;
	ok = ok && dns_wire_query_parse(msg, len, &q) == -EBADMSG;
	msg[2] = 0x01 | 2 << 3;
	ok = ok && dns_wire_query_parse(msg, len, &q) == DNS_RCODE_NOTIMP;
	msg[2] = 0x01;
	msg[5] = 2;
	ok = ok && dns_wire_query_parse(msg, len, &q) == DNS_RCODE_FORMERR;
	msg[5] = 1;
	msg[7] = 1;
	ok = ok && dns_wire_query_parse(msg, len, &q) == DNS_RCODE_FORMERR;
	msg[7] = 0;
	tap_ok(ok, "wire: short, response, opcode, QDCOUNT 2, ANCOUNT 1, cut question: drop, FORMERR or NOTIMP");

	n = dns_wire_error(out, msg, len, DNS_RCODE_REFUSED);
	ok = n == len && out[0] == 0xbe && out[1] == 0xef && out[2] == (0x80 | 0x01) &&
	     out[3] == (0x80 | DNS_RCODE_REFUSED) && out[5] == 1 && out[7] == 0 &&
	     !memcmp(out + 12, msg + 12, len - 12);
	n = dns_wire_error(out, msg, 0, DNS_RCODE_FORMERR);
	ok = ok && n == 12 && out[3] == (0x80 | DNS_RCODE_FORMERR) && out[5] == 0;
	tap_ok(ok, "wire: error replies keep ID and RD, set QR/RA/RCODE, echo the question or none");
}

static void test_wire_answers(void)
{
	static const uint8_t a4[] = { 10, 9, 9, 9 }, a6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 9 },
			     other[] = { 10, 6, 6, 6 };
	uint8_t qmsg[512];
	struct dns_wire_question q;
	struct got g = { .fail_at = -1 };
	struct mb m, cut;
	size_t qname, c2, target, qend, full, before_aaaa;
	bool ok;

	dns_wire_query_parse(qmsg, build_query(qmsg, 7, "c1.test", 1), &q);
	mb_hdr(&m, 0x1234, 0x81, 0x80, 1, 5);
	qname = mb_name(&m, "C1.test");
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	qend = m.n;
	/* c1 CNAME c2 (written out inside the rdata), c2 CNAME target, then target's A and
	 * AAAA, and an A for a name off the chain */
	mb_ptr(&m, qname);
	mb_u16(&m, DNS_TYPE_CNAME);
	mb_u16(&m, DNS_CLASS_IN);
	mb_u32(&m, 60);
	mb_u16(&m, 9);
	c2 = mb_name(&m, "c2.test");
	mb_ptr(&m, c2);
	mb_u16(&m, DNS_TYPE_CNAME);
	mb_u16(&m, DNS_CLASS_IN);
	mb_u32(&m, 60);
	mb_u16(&m, 13);
	target = mb_name(&m, "target.test");
	mb_rr(&m, target, DNS_TYPE_A, 0x80000001u, a4, 4);
	before_aaaa = m.n;
	mb_rr(&m, target, DNS_TYPE_AAAA, 300, a6, 16);
	mb_name(&m, "other.test");
	mb_u16(&m, DNS_TYPE_A);
	mb_u16(&m, DNS_CLASS_IN);
	mb_u32(&m, 300);
	mb_u16(&m, 4);
	mb_put(&m, other, 4);
	full = m.n;

	ok = dns_wire_reply_matches(m.b, m.n, 0x1234, &q, &(size_t){ 0 }) &&
	     !dns_wire_reply_matches(m.b, m.n, 0x1235, &q, &(size_t){ 0 });
	m.b[2] &= 0x7f;
	ok = ok && !dns_wire_reply_matches(m.b, m.n, 0x1234, &q, &(size_t){ 0 });
	m.b[2] |= 0x80;
	tap_ok(ok, "wire: a reply matches its ID and question (any case), not another ID or a query");

	ok = dns_wire_answers(m.b, m.n, qend, &q, got_addr, &g) == 0 && g.n == 2 &&
	     got_has(&g, AF_INET, "10.9.9.9", 0) && got_has(&g, AF_INET6, "2001:db8::9", 300);
	tap_ok(ok, "wire: A and AAAA at the end of a CNAME chain reported, top-bit TTL as 0, others not (%d)",
	       g.n);

	cut = m;
	cut.n = before_aaaa + 8; /* inside the AAAA record */
	g.n = 0;
	ok = dns_wire_answers(cut.b, cut.n, qend, &q, got_addr, &g) == -EBADMSG;
	cut.b[2] |= 0x02; /* TC */
	g.n = 0;
	ok = ok && dns_wire_answers(cut.b, cut.n, qend, &q, got_addr, &g) == 0 && g.n == 1 &&
	     got_has(&g, AF_INET, "10.9.9.9", 0);
	tap_ok(ok, "wire: a cut answer is -EBADMSG, with TC the records that arrived whole count");

	g.n = 0;
	g.fail_at = 1;
	ok = dns_wire_answers(m.b, full, qend, &q, got_addr, &g) == -ENOSPC && g.n == 1;
	g.fail_at = -1;
	m.b[before_aaaa + 11] = 15; /* AAAA rdlen 15: a bad address */
	g.n = 0;
	ok = ok && dns_wire_answers(m.b, full, qend, &q, got_addr, &g) == -EBADMSG;
	m.b[before_aaaa + 11] = 16;
	tap_ok(ok, "wire: the callback's error stops the walk; an address of the wrong size is -EBADMSG");

	/* c1 CNAME c2, c2 CNAME c1, and c1's A: the chain closes and the walk ends */
	mb_hdr(&m, 1, 0x81, 0x80, 1, 3);
	qname = mb_name(&m, "c1.test");
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	qend = m.n;
	mb_ptr(&m, qname);
	mb_u16(&m, DNS_TYPE_CNAME);
	mb_u16(&m, DNS_CLASS_IN);
	mb_u32(&m, 60);
	mb_u16(&m, 9);
	c2 = mb_name(&m, "c2.test");
	mb_rr(&m, c2, DNS_TYPE_CNAME, 60, (uint8_t[]){ 0xc0, (uint8_t)qname }, 2);
	mb_rr(&m, qname, DNS_TYPE_A, 5, a4, 4);
	g.n = 0;
	ok = dns_wire_answers(m.b, m.n, qend, &q, got_addr, &g) == 0 && g.n == 1;
	tap_ok(ok, "wire: a CNAME loop ends; the address on it is reported once");
}

/* Damaged copies of a real answer through every entry point: each call must return,
 * whatever the bytes. */
static void test_wire_fuzz(void)
{
	uint8_t base[512], msg[600];
	struct dns_wire_question q, qq;
	struct got g = { .fail_at = -1 };
	size_t blen;
	struct mb m;

	dns_wire_query_parse(base, build_query(base, 7, "c1.test", 1), &q);
	mb_hdr(&m, 7, 0x81, 0x80, 1, 2);
	mb_name(&m, "c1.test");
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	mb_rr(&m, 12, DNS_TYPE_CNAME, 60, (uint8_t[]){ 1, 'x', 0xc0, 12 }, 4);
	mb_rr(&m, m.n - 4, DNS_TYPE_A, 60, (uint8_t[]){ 1, 2, 3, 4 }, 4);
	memcpy(base, m.b, m.n);
	blen = m.n;
	for (int i = 0; i < 200000; i++) {
		size_t len = blen, qend;

		memcpy(msg, base, blen);
		for (int f = 1 + (int)(random() % 3); f > 0; f--)
			msg[(size_t)random() % blen] = (uint8_t)random();
		if (random() % 4 == 0)
			len = (size_t)random() % blen;
		g.n = 0;
		if (dns_wire_reply_matches(msg, len, 7, &q, &qend))
			dns_wire_answers(msg, len, qend, &q, got_addr, &g);
		dns_wire_answers(msg, len, len < 12 ? 0 : 12, &q, got_addr, &g);
		if (dns_wire_query_parse(msg, len, &qq) == 0) {
			char text[DNS_WIRE_NAME_MAX + 1];
			uint8_t out[DNS_WIRE_ERR_MAX];

			dns_wire_name_text(qq.name, text);
			dns_wire_error(out, msg, qq.end, DNS_RCODE_REFUSED);
		}
	}
	tap_ok(true, "wire: 200000 damaged answers through every entry point return");
}

/* ---- dnsmasq and the loop thread ---- */

static void remove_tmpdir(void)
{
	util_rm_rf(tmpdir);
}

static int start_dnsmasq(uint16_t *port_out)
{
	char hosts[128], hostsarg[160];
	FILE *f;

	snprintf(hosts, sizeof(hosts), "%s/hosts", tmpdir);
	f = fopen(hosts, "w");
	if (!f)
		return -1;
	for (int i = 1; i <= BIG_RECORDS; i++)
		fprintf(f, "10.0.1.%d big.test\n", i);
	fclose(f);
	snprintf(hostsarg, sizeof(hostsarg), "--addn-hosts=%s", hosts);
	return tl_dnsmasq_start(port_out, NULL, "--local-ttl=300",
				"--host-record=allowed.test,10.1.2.3,2001:db8::3",
				"--host-record=target.test,10.9.9.9", "--host-record=target.test,2001:db8::9",
				"--host-record=denied.test,10.6.6.6", "--host-record=fail.test,10.5.5.5",
				"--cname=c1.test,c2.test", "--cname=c2.test,target.test", hostsarg,
				(char *)NULL) < 0 ? -1 : 0;
}

static int stop_pipe[2] = { -1, -1 };

static void on_stop(struct loop *l, int fd, uint32_t events, void *arg)
{
	loop_stop(l);
}

static void *loop_thread(void *arg)
{
	loop_run(arg);
	return NULL;
}

/* ---- the tests ---- */

static void test_upstream_parse(void)
{
	struct dns_upstream u;
	struct lerr e = { { 0 } };
	struct sockaddr_in *a4 = (struct sockaddr_in *)&u.addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&u.addr;
	bool ok;

	ok = dns_upstream_parse("127.0.0.1:5353", &u, &e) == 0 && a4->sin_family == AF_INET &&
	     ntohs(a4->sin_port) == 5353 && a4->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
	ok = ok && dns_upstream_parse("[::1]:54", &u, &e) == 0 && a6->sin6_family == AF_INET6 &&
	     ntohs(a6->sin6_port) == 54 && IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
	ok = ok && dns_upstream_parse("10.0.0.1", &u, &e) == 0 && ntohs(a4->sin_port) == 53;
	ok = ok && dns_upstream_parse("::1", &u, &e) == 0 && a6->sin6_family == AF_INET6 &&
	     ntohs(a6->sin6_port) == 53;
	ok = ok && dns_upstream_parse("[::1]", &u, &e) == 0 && ntohs(a6->sin6_port) == 53;
	tap_ok(ok, "upstream: ADDR:PORT, [V6]:PORT, ADDR and bare V6 parse");

	ok = true;
	for (const char *bad[] = { "example.com", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:x",
				   "[::1", "[1.2.3.4]:53", "[::1]x", "1.2.3.4:" },
			*const *b = bad;
	     b < bad + ARRAY_SIZE(bad); b++) {
		e.msg[0] = '\0';
		if (dns_upstream_parse(*b, &u, &e) != -EINVAL || !strstr(e.msg, *b)) {
			tap_diag("accepted or unexplained: \"%s\" (%s)", *b, e.msg);
			ok = false;
		}
	}
	tap_ok(ok, "upstream: bad forms are -EINVAL with a message naming them");

	/* parsing only: nothing is sent to the host's resolver */
	if (access("/etc/resolv.conf", R_OK) == 0 && !system("grep -qs '^nameserver' /etc/resolv.conf"))
		tap_ok(dns_upstream_parse(NULL, &u, &e) == 0 &&
			       (u.addr.ss_family == AF_INET || u.addr.ss_family == AF_INET6) &&
			       dns_upstream_parse("", &u, &e) == 0,
		       "upstream: NULL and \"\" read resolv.conf's first nameserver");
	else
		tap_skip("no nameserver in /etc/resolv.conf", "upstream: resolv.conf fallback");
}

static void test_basic(uint16_t port)
{
	struct resp r;
	bool ok;

	ok = ask(false, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && has_addr(&r, AF_INET, "10.1.2.3") && r.ttl[0] == TTL &&
	     all_reported("allowed.test", &r);
	tap_ok(ok, "udp 127.0.0.1: A allowed, address and TTL reported before the reply");

	ok = ask(false, AF_INET6, port, "allowed.test", 28, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && has_addr(&r, AF_INET6, "2001:db8::3") &&
	     all_reported("allowed.test", &r);
	tap_ok(ok, "udp [::1]: AAAA allowed and reported");

	ok = ask(true, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && all_reported("allowed.test", &r);
	tap_ok(ok, "tcp 127.0.0.1: A allowed and reported");

	ok = ask(true, AF_INET6, port, "allowed.test", 28, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && has_addr(&r, AF_INET6, "2001:db8::3") &&
	     all_reported("allowed.test", &r);
	tap_ok(ok, "tcp [::1]: AAAA allowed and reported");

	ok = ask(false, AF_INET, port, "ALLOWED.Test.", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && all_reported("allowed.test", &r);
	tap_ok(ok, "qname is matched lowercase without the trailing dot");

	ok = ask(false, AF_INET, port, "denied.test", 1, &r) == 0 && r.rcode == 5 &&
	     r.qdcount == 1 && r.ancount == 0 && seen_refusal("denied.test", 1) &&
	     count_answers("denied.test") == 0;
	tap_ok(ok, "udp: disallowed name is REFUSED with its question, refused callback called");

	ok = ask(true, AF_INET6, port, "denied.test", 28, &r) == 0 && r.rcode == 5 &&
	     seen_refusal("denied.test", 28) && count_answers("denied.test") == 0;
	tap_ok(ok, "tcp: disallowed name is REFUSED, refused callback called");

	/* c1 -> c2 -> target: only c1 is allowed; the chain's addresses are what matter */
	ok = ask(false, AF_INET, port, "c1.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_cname == 2 && has_addr(&r, AF_INET, "10.9.9.9") && all_reported("c1.test", &r);
	tap_ok(ok, "CNAME chain: A at the end of c1 -> c2 -> target reported for c1");
	ok = ask(true, AF_INET, port, "c1.test", 28, &r) == 0 && r.rcode == 0 &&
	     has_addr(&r, AF_INET6, "2001:db8::9") && all_reported("c1.test", &r);
	tap_ok(ok, "CNAME chain: AAAA over TCP reported");

	ok = ask(false, AF_INET, port, "fail.test", 1, &r) == 0 && r.rcode == 2 &&
	     r.ancount == 0 && r.qdcount == 1;
	tap_ok(ok, "answer callback failing -> SERVFAIL, no address to the client");
}

static void test_truncation(uint16_t port)
{
	struct resp r;
	bool ok, udp_ok;
	size_t before = count_answers("big.test");

	udp_ok = ask(false, AF_INET, port, "big.test", 1, &r) == 0 && r.rcode == 0 && r.tc &&
		 r.n_addr < BIG_RECORDS && all_reported("big.test", &r);
	tap_ok(udp_ok, "udp: a >512-byte answer arrives with TC set (%d of %d records)", r.n_addr,
	       BIG_RECORDS);

	ok = ask(true, AF_INET, port, "big.test", 1, &r) == 0 && r.rcode == 0 && !r.tc &&
	     r.n_addr == BIG_RECORDS && all_reported("big.test", &r);
	for (int i = 1; ok && i <= BIG_RECORDS; i++) {
		char a[32];

		snprintf(a, sizeof(a), "10.0.1.%d", i);
		ok = has_addr(&r, AF_INET, a);
	}
	tap_ok(ok && count_answers("big.test") >= before + BIG_RECORDS,
	       "tcp retry: all %d records returned and reported", BIG_RECORDS);
}

static void test_malformed(uint16_t port)
{
	uint8_t q[512], out[65536];
	struct resp r;
	size_t len;
	ssize_t n;
	bool ok;

	/* too short to answer */
	n = udp_raw(AF_INET, port, (const uint8_t *)"\x12", 1, out, 300);
	tap_ok(n < 0, "1-byte datagram is dropped");

	/* a response is never answered */
	len = build_query(q, 0x4242, "allowed.test", 1);
	q[2] |= 0x80;
	n = udp_raw(AF_INET, port, q, len, out, 300);
	tap_ok(n < 0, "a message with QR set is dropped");

	len = build_query(q, 0x1111, "allowed.test", 1);
	q[5] = 2; /* QDCOUNT 2 with one question */
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x1111 && r.rcode == 1;
	tap_ok(ok, "QDCOUNT=2 -> FORMERR with the same ID");

	len = build_query(q, 0x2222, "allowed.test", 1);
	q[12] = 60; /* label runs past the end */
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x2222 && r.rcode == 1;
	tap_ok(ok, "label past the end -> FORMERR");

	len = build_query(q, 0x3333, "allowed.test", 1);
	q[12] = 0xc0; /* compression pointer in a query's question */
	q[13] = 12;
	n = tcp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x3333 && r.rcode == 1;
	tap_ok(ok, "tcp: self-pointing name -> FORMERR");

	len = build_query(q, 0x4444, "allowed.test", 1);
	q[2] = 2 << 3; /* opcode STATUS */
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x4444 && r.rcode == 4;
	tap_ok(ok, "opcode other than QUERY -> NOTIMP");

	/* "a.b" as one label: not a hostname, never matches a pattern */
	len = build_query(q, 0x5555, "abc", 1);
	q[14] = '.';
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x5555 && r.rcode == 5;
	tap_ok(ok, "a '.' inside a label -> REFUSED");

	ok = ask(false, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1;
	tap_ok(ok, "server still answers after malformed input");
}

/* Random damage to valid queries, over UDP and TCP: whatever comes back, the server
 * must survive it and keep answering. */
static void test_fuzz(uint16_t port)
{
	int ufd = udp_socket(AF_INET, port), tfd = tcp_connect(AF_INET, port);
	uint8_t base[512], q[514], out[65536];
	struct resp r;
	bool ok;

	for (int i = 0; i < 5000 && ufd >= 0; i++) {
		size_t len = build_query(base, (uint16_t)i, i % 2 ? "allowed.test" : "denied.test", 1);
		int flips = 1 + (int)(random() % 4);

		memcpy(q + 2, base, len);
		for (int f = 0; f < flips; f++)
			q[2 + (size_t)random() % len] = (uint8_t)random();
		if (random() % 4 == 0)
			len = (size_t)random() % len;
		if (send(ufd, q + 2, len, 0) < 0 && errno != ECONNREFUSED)
			break;
		if (tfd >= 0 && i % 10 == 0) {
			q[0] = (uint8_t)(len >> 8);
			q[1] = (uint8_t)len;
			if (write(tfd, q, len + 2) < 0) {
				close(tfd);
				tfd = -1;
			}
		}
		while (i % 100 == 0 && recv(ufd, out, sizeof(out), MSG_DONTWAIT) > 0)
			;
	}
	if (ufd >= 0)
		close(ufd);
	if (tfd >= 0)
		close(tfd);
	/* damaged queries the upstream ignores hold in-flight slots until their timeout
	 * (3 s); until then a full server rightly answers SERVFAIL, so allow for that */
	for (int tries = 0; tries < 60; tries++) {
		ok = ask(false, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
		     r.n_addr == 1 && ask(true, AF_INET, port, "allowed.test", 1, &r) == 0 &&
		     r.rcode == 0;
		if (ok)
			break;
		usleep(100000);
	}
	tap_ok(ok, "5000 damaged queries over UDP and TCP: server survives and still answers");
}

static void test_tcp_pipeline(uint16_t port)
{
	uint8_t buf[1024], out[65536];
	size_t a, b;
	int fd = tcp_connect(AF_INET6, port);
	struct resp r1, r2;
	bool ok = false;
	ssize_t n1, n2;

	if (fd >= 0) {
		a = build_query(buf + 2, 0xaaaa, "allowed.test", 1);
		buf[0] = 0;
		buf[1] = (uint8_t)a;
		b = build_query(buf + 4 + a, 0xbbbb, "denied.test", 1);
		buf[2 + a] = 0;
		buf[3 + a] = (uint8_t)b;
		/* both in one write: the server must split the frames itself */
		if (write(fd, buf, a + b + 4) == (ssize_t)(a + b + 4)) {
			n1 = tcp_read_msg(fd, out, 5000);
			ok = n1 > 0 && parse_resp(out, (size_t)n1, &r1) == 0;
			n2 = ok ? tcp_read_msg(fd, out, 5000) : -1;
			ok = ok && n2 > 0 && parse_resp(out, (size_t)n2, &r2) == 0;
			if (ok && r1.id == 0xbbbb) {
				struct resp t = r1;
				r1 = r2;
				r2 = t;
			}
			ok = ok && r1.id == 0xaaaa && r1.rcode == 0 && r1.n_addr == 1 &&
			     r2.id == 0xbbbb && r2.rcode == 5;
		}
		close(fd);
	}
	tap_ok(ok, "tcp: two queries on one connection both answered");
}

/* More queries in one write than the proxy serves per wake-up, then silence: the rest
 * must still be served, though the socket has nothing more to read. */
static void test_tcp_backlog(uint16_t port)
{
	enum { N = 200 };
	static uint8_t buf[N * 40];
	uint8_t out[65536];
	int fd = tcp_connect(AF_INET, port), got = 0;
	size_t len = 0;

	for (int i = 0; i < N; i++) {
		size_t n = build_query(buf + len + 2, (uint16_t)i, "denied.test", 1);

		buf[len] = (uint8_t)(n >> 8);
		buf[len + 1] = (uint8_t)n;
		len += 2 + n;
	}
	if (fd >= 0 && write(fd, buf, len) == (ssize_t)len) {
		struct resp r;
		ssize_t n;

		while (got < N && (n = tcp_read_msg(fd, out, 3000)) > 0 &&
		       parse_resp(out, (size_t)n, &r) == 0 && r.rcode == 5)
			got++;
	}
	if (fd >= 0)
		close(fd);
	tap_ok(got == N, "tcp: %d queries in one write, then silence: all answered (%d)", N, got);
}

/* ---- one TCP client flooding, another asking over UDP ---- */

struct flood {
	int fd;
	volatile bool stop;
	size_t sent, received;
};

static void *flood_writer(void *arg)
{
	struct flood *f = arg;
	uint8_t buf[60000];
	size_t len = 0;

	/* queries the proxy refuses itself: all the work is on its loop */
	while (len + 2 + 64 <= sizeof(buf)) {
		size_t n = build_query(buf + len + 2, (uint16_t)len, "denied.test", 1);

		buf[len] = (uint8_t)(n >> 8);
		buf[len + 1] = (uint8_t)n;
		len += 2 + n;
	}
	while (!f->stop) {
		ssize_t n = write(f->fd, buf, len);

		if (n <= 0)
			break;
		f->sent += (size_t)n;
	}
	return NULL;
}

static void *flood_reader(void *arg)
{
	struct flood *f = arg;
	uint8_t buf[65536];
	ssize_t n;

	while ((n = read(f->fd, buf, sizeof(buf))) > 0)
		f->received += (size_t)n;
	return NULL;
}

/* One connection that never stops writing may not hold the loop: the proxy serves a
 * bounded number of its queries per wake-up, and another client's UDP query is answered
 * meanwhile. */
static void test_tcp_flood(uint16_t port)
{
	struct flood f = { .fd = tcp_connect(AF_INET, port) };
	pthread_t w, r;
	uint64_t worst = 0;
	int answered = 0;

	if (f.fd < 0 || pthread_create(&w, NULL, flood_writer, &f)) {
		tap_ok(false, "tcp flood: connect and start");
		return;
	}
	if (pthread_create(&r, NULL, flood_reader, &f)) {
		f.stop = true;
		shutdown(f.fd, SHUT_RDWR);
		pthread_join(w, NULL);
		tap_ok(false, "tcp flood: start the reader");
		return;
	}
	usleep(300000);
	for (int i = 0; i < 5; i++) {
		uint8_t q[512], out[65536];
		size_t len = build_query(q, (uint16_t)(0x7000 + i), "allowed.test", 1);
		uint64_t t0 = tl_ms();
		ssize_t n = udp_raw(AF_INET, port, q, len, out, 2000);
		struct resp rp;

		if (tl_ms() - t0 > worst)
			worst = tl_ms() - t0;
		answered += n > 0 && parse_resp(out, (size_t)n, &rp) == 0 && rp.rcode == 0 &&
			    rp.n_addr == 1;
		usleep(50000);
	}
	f.stop = true;
	shutdown(f.fd, SHUT_RDWR);
	pthread_join(w, NULL);
	pthread_join(r, NULL);
	close(f.fd);
	tap_ok(answered == 5 && worst < 200 && f.received > 0,
	       "tcp flood (%zu KiB queries, %zu KiB replies): 5 UDP queries answered meanwhile, slowest %llu ms",
	       f.sent >> 10, f.received >> 10, (unsigned long long)worst);
}

/* A client that sends queries and never reads a reply is dropped once its replies pass
 * the queue's cap, instead of growing lanternd. */
static void test_tcp_no_reader(uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t alen = loopback(AF_INET, port, &ss);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), small = 4096, err = 0;
	uint8_t buf[60000];
	size_t len = 0, sent = 0;
	uint64_t deadline = tl_ms() + 10000;

	while (len + 2 + 64 <= sizeof(buf)) {
		size_t n = build_query(buf + len + 2, (uint16_t)len, "denied.test", 1);

		buf[len] = (uint8_t)(n >> 8);
		buf[len + 1] = (uint8_t)n;
		len += 2 + n;
	}
	/* a small window, so the kernel holds few of the replies for us */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, alen) < 0) {
		tap_ok(false, "tcp no reader: connect: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	while (!err && tl_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n > 0)
			sent += (size_t)n;
		else if (errno == EAGAIN)
			poll(&p, 1, 100);
		else
			err = errno;
	}
	close(fd);
	tap_ok(err == ECONNRESET || err == EPIPE,
	       "tcp: a client that never reads is dropped (%s after %zu KiB of queries)",
	       err ? strerror(err) : "still connected", sent >> 10);
}

/* Sends n queries at once from n sockets; counts replies by rcode within ms. */
static void burst(uint16_t port, const char *name, int n, int ms, int *noerror, int *servfail,
		  int *other, uint64_t *first_ms, uint64_t *last_ms)
{
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	uint16_t *ids = calloc((size_t)n, sizeof(*ids));
	uint64_t start = tl_ms();
	int left = 0;

	*noerror = *servfail = *other = 0;
	*first_ms = *last_ms = 0;
	for (int i = 0; i < n; i++) {
		uint8_t q[512];
		size_t len;

		ids[i] = (uint16_t)i;
		len = build_query(q, ids[i], name, 1);
		p[i].fd = udp_socket(i % 2 ? AF_INET6 : AF_INET, port);
		p[i].events = POLLIN;
		if (p[i].fd >= 0 && send(p[i].fd, q, len, 0) == (ssize_t)len)
			left++;
		else
			(*other)++;
	}
	while (left > 0 && tl_ms() < start + (uint64_t)ms) {
		if (poll(p, (nfds_t)n, 100) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			uint8_t out[65536];
			struct resp r;
			ssize_t len;

			if (!(p[i].revents & POLLIN))
				continue;
			len = recv(p[i].fd, out, sizeof(out), 0);
			close(p[i].fd);
			p[i].fd = -1;
			left--;
			if (len < 0 || parse_resp(out, (size_t)len, &r) < 0 || r.id != ids[i])
				(*other)++;
			else if (r.rcode == 0 && r.n_addr == 1)
				(*noerror)++;
			else if (r.rcode == 2)
				(*servfail)++;
			else
				(*other)++;
			if (!*first_ms)
				*first_ms = tl_ms() - start;
			*last_ms = tl_ms() - start;
		}
	}
	for (int i = 0; i < n; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	free(p);
	free(ids);
}

int main(void)
{
	struct dns_callbacks cb = { .allowed = cb_allowed, .answer = cb_answer, .refused = cb_refused };
	struct dns_server *srv = NULL, *dead = NULL, *silent = NULL;
	struct dns_upstream up, up_dead, up_silent;
	struct rlimit rl = { 4096, 4096 };
	struct lerr e = { { 0 } };
	struct loop *l = NULL;
	pthread_t th;
	uint16_t dport = 0, port, silent_port = 0, dead_port = 0;
	int silent_fd, noerr, servfail, other, err;
	uint64_t first, last;
	char spec[64];
	struct resp r;
	bool made;

	tap_plan(51);
	signal(SIGPIPE, SIG_IGN);
	setrlimit(RLIMIT_NOFILE, &rl);
	srandom((unsigned)getpid());

	test_wire_names();
	test_wire_query();
	test_wire_answers();
	test_wire_fuzz();
	test_upstream_parse();

	util_tmp_template(tmpdir, sizeof(tmpdir), "/tmp/lantern-test-dns-");
	made = mkdtemp(tmpdir) != NULL;
	if (made)
		tl_on_exit(remove_tmpdir);
	if (!made || start_dnsmasq(&dport) < 0) {
		tap_ok(false, "dnsmasq starts on 127.0.0.1");
		return tap_done();
	}
	tap_ok(true, "dnsmasq starts on 127.0.0.1:%u", dport);

	/* a dead upstream refuses (closed port); a silent one takes queries and never answers */
	silent_fd = tl_udp_bind("127.0.0.1", &silent_port);
	err = tl_udp_bind("127.0.0.1", &dead_port);
	if (err >= 0)
		close(err);
	l = loop_new();
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", dport);
	err = l ? dns_upstream_parse(spec, &up, &e) : -ENOMEM;
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", dead_port);
	err = err ?: dns_upstream_parse(spec, &up_dead, &e);
	snprintf(spec, sizeof(spec), "[::ffff:127.0.0.1]:%u", silent_port);
	err = err ?: dns_upstream_parse(spec, &up_silent, &e);
	err = err ?: dns_server_open(l, &up, 0, &cb, NULL, &srv, &e);
	err = err ?: dns_server_open(l, &up_dead, 0, &cb, NULL, &dead, &e);
	err = err ?: dns_server_open(l, &up_silent, 0, &cb, NULL, &silent, &e);
	if (!tap_ok(!err && silent_fd >= 0 && dns_server_port(srv) != 0,
		    "servers open on free ports (%s)", err ? e.msg : "ok"))
		return tap_done();
	port = dns_server_port(srv);
	{
		struct dns_server *again = NULL;

		err = dns_server_open(l, &up, port, &cb, NULL, &again, &e);
		tap_ok(err == -EADDRINUSE && strstr(e.msg, "port"),
		       "a taken port is an error naming it (%s)", e.msg);
		dns_server_close(again);
	}
	if (pipe2(stop_pipe, O_CLOEXEC) < 0 || loop_add(l, stop_pipe[0], EPOLLIN, on_stop, NULL) < 0 ||
	    pthread_create(&th, NULL, loop_thread, l)) {
		tap_ok(false, "loop thread starts");
		return tap_done();
	}

	test_basic(port);
	test_truncation(port);
	test_malformed(port);
	test_tcp_pipeline(port);
	test_tcp_backlog(port);
	test_tcp_flood(port);
	test_tcp_no_reader(port);
	test_fuzz(port);

	first = tl_ms();
	tap_ok(ask(false, AF_INET, dns_server_port(dead), "allowed.test", 1, &r) == 0 &&
		       r.rcode == 2 && tl_ms() - first < 3500,
	       "upstream down (port closed) -> SERVFAIL (%llu ms)",
	       (unsigned long long)(tl_ms() - first));
	first = tl_ms();
	tap_ok(ask(true, AF_INET, dns_server_port(dead), "allowed.test", 1, &r) == 0 &&
		       r.rcode == 2 && tl_ms() - first < 3500,
	       "tcp: upstream down -> SERVFAIL");

	burst(dns_server_port(silent), "allowed.test", OVER_LIMIT, 6000, &noerr, &servfail, &other,
	      &first, &last);
	tap_ok(servfail == OVER_LIMIT && other == 0,
	       "silent upstream: all %d queries SERVFAIL (%d servfail, %d other)", OVER_LIMIT,
	       servfail, other);
	tap_ok(first < 1000 && last >= 2500 && last < 4500,
	       "beyond 256 in flight SERVFAIL at once (%llu ms), the rest at the ~3 s timeout (%llu ms)",
	       (unsigned long long)first, (unsigned long long)last);

	burst(port, "allowed.test", MANY, 10000, &noerr, &servfail, &other, &first, &last);
	tap_ok(noerr == MANY, "%d concurrent queries all answered (%d ok, %d servfail, %d other, %llu ms)",
	       MANY, noerr, servfail, other, (unsigned long long)last);

	/* leave queries in flight, then close everything under them */
	for (int i = 0; i < 10; i++) {
		uint8_t q[512];
		size_t len = build_query(q, (uint16_t)i, "allowed.test", 1);
		int fd = udp_socket(AF_INET, dns_server_port(silent));

		if (fd >= 0) {
			send(fd, q, len, 0);
			close(fd);
		}
	}
	{
		int fd = tcp_connect(AF_INET, dns_server_port(silent));
		uint8_t q[512];
		size_t len = build_query(q + 2, 1, "allowed.test", 1);

		q[0] = 0;
		q[1] = (uint8_t)len;
		if (fd >= 0 && write(fd, q, len + 2) < 0)
			tap_diag("write: %s", strerror(errno));
		usleep(200000);
		if (write(stop_pipe[1], "x", 1) != 1)
			tap_diag("stop: %s", strerror(errno));
		pthread_join(th, NULL);
		dns_server_close(silent);
		dns_server_close(dead);
		dns_server_close(srv);
		loop_del(l, stop_pipe[0]);
		loop_free(l);
		if (fd >= 0)
			close(fd);
	}
	tap_ok(true, "servers close with queries and TCP clients in flight");
	close(silent_fd);
	return tap_done();
}
