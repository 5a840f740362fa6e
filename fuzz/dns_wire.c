/* dns_wire.c (fuzz target "dns_wire"): the FQDN proxy's wire codec on bytes a workload
 * (a query) or an upstream (a reply to a name the workload chose) controls.
 *
 * The first byte picks when the address callback stops the walk (0: never); the rest is
 * one DNS message, read three ways: as a client's query (then the error reply built for
 * it must be a reply that matches that query), as an upstream's reply to the question it
 * carries (every address handed out has its TTL's top bit cleared), and as names at its
 * first offsets (canonical, at most 255 bytes, the offset moved forward within the
 * message). */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fuzzlib.h"
#include "lantern/dns_wire.h"

struct walk {
	unsigned stop_after, seen;
};

static int on_addr(void *ctx, const uint8_t addr[16], uint32_t ttl)
{
	struct walk *w = ctx;

	FZ_CHECK(!(ttl & 0x80000000u), "TTL %u handed out with its top bit set", ttl);
	if (++w->seen == w->stop_after)
		return -ECANCELED;
	return 0;
}

static void check_canonical(const uint8_t *name, size_t len)
{
	size_t p = 0;

	FZ_CHECK(len >= 1 && len <= DNS_WIRE_NAME_MAX, "name of %zu bytes", len);
	while (name[p]) {
		FZ_CHECK(name[p] < 64, "label of %u bytes", name[p]);
		for (size_t i = 1; i <= name[p]; i++)
			FZ_CHECK(!(name[p + i] >= 'A' && name[p + i] <= 'Z'), "upper case in a name");
		p += 1 + (size_t)name[p];
		FZ_CHECK(p < len, "labels run past the name's %zu bytes", len);
	}
	FZ_CHECK(p + 1 == len, "root label at %zu of %zu", p, len);
}

static void as_query(const uint8_t *msg, size_t len)
{
	struct dns_wire_question q;
	uint8_t out[DNS_WIRE_ERR_MAX];
	char text[DNS_WIRE_NAME_MAX + 1];
	size_t n, qend;
	int v = dns_wire_query_parse(msg, len, &q);

	if (v < 0) {
		FZ_CHECK(v == -EBADMSG, "query_parse: %d", v);
		return;
	}
	if (v > 0) {
		FZ_CHECK(v == DNS_RCODE_FORMERR || v == DNS_RCODE_NOTIMP, "query_parse: rcode %d", v);
		n = dns_wire_error(out, msg, DNS_WIRE_HDR, v);
		FZ_CHECK(n == DNS_WIRE_HDR && dns_wire_rcode(out) == v, "error reply of %zu bytes", n);
		return;
	}
	FZ_CHECK(q.end <= len, "question ends at %zu of %zu", q.end, len);
	check_canonical(q.name, q.name_len);
	dns_wire_name_text(q.name, text);
	FZ_CHECK(strlen(text) == (q.name_len > 1 ? q.name_len - 2 : 0), "text \"%s\" of a %zu-byte name",
		 text, q.name_len);
	n = dns_wire_error(out, msg, q.end, DNS_RCODE_REFUSED);
	FZ_CHECK(n == q.end, "error reply of %zu bytes for a question ending at %zu", n, q.end);
	FZ_CHECK(dns_wire_reply_matches(out, n, dns_wire_id(msg), &q, &qend) && qend == n,
		 "the error reply built for a query does not match it");
}

static void as_reply(const uint8_t *msg, size_t len, unsigned stop_after)
{
	struct dns_wire_question q = { .name = { 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0 },
				       .name_len = 13, .type = DNS_TYPE_A, .class = DNS_CLASS_IN };
	struct walk w = { .stop_after = stop_after };
	size_t off = DNS_WIRE_HDR, qend;
	int err;

	if (len < DNS_WIRE_HDR)
		return;
	/* the reply's own question, as if the workload had asked it */
	if (dns_wire_name_read(msg, len, &off, false, q.name, &q.name_len) == 0 && off + 4 <= len) {
		q.type = (uint16_t)(msg[off] << 8 | msg[off + 1]);
		q.class = (uint16_t)(msg[off + 2] << 8 | msg[off + 3]);
	}
	if (!dns_wire_reply_matches(msg, len, dns_wire_id(msg), &q, &qend))
		return;
	FZ_CHECK(qend >= DNS_WIRE_HDR && qend <= len, "reply's question ends at %zu of %zu", qend, len);
	err = dns_wire_answers(msg, len, qend, &q, on_addr, &w);
	FZ_CHECK(err == 0 || err == -EBADMSG || err == -ECANCELED, "answers: %d", err);
	FZ_CHECK(err != -ECANCELED || w.seen == stop_after, "stopped after %u, asked %u", w.seen,
		 stop_after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t name[DNS_WIRE_NAME_MAX];
	const uint8_t *msg;
	size_t len, nlen;
	unsigned stop_after;

	if (!size)
		return 0;
	stop_after = data[0];
	msg = data + 1;
	len = size - 1;
	as_query(msg, len);
	as_reply(msg, len, stop_after);
	for (size_t start = 0; start < len && start < 64; start++) {
		size_t off = start;

		if (dns_wire_name_read(msg, len, &off, true, name, &nlen) < 0)
			continue;
		check_canonical(name, nlen);
		FZ_CHECK(off > start && off <= len, "name at %zu moved the offset to %zu", start, off);
	}
	return 0;
}
