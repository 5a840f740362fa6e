/* wire.c: the DNS wire codec of the FQDN proxy (lantern/dns_wire.h): names, a client's
 * query, error replies, matching an upstream's reply to its query, and the addresses an
 * answer holds. Pure functions of their input bytes; server.c does the I/O. */
#include "lantern/dns_wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DNS_CHAIN_MAX 16 /* CNAME hops followed; resolvers give up well before this */

#define DNS_FLAG_QR 0x80 /* in byte 2 */
#define DNS_FLAG_TC 0x02 /* in byte 2 */
#define DNS_FLAG_RA 0x80 /* in byte 3 */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t ascii_lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

uint16_t dns_wire_id(const uint8_t *msg)
{
	return get16(msg);
}

void dns_wire_set_id(uint8_t *msg, uint16_t id)
{
	put16(msg, id);
}

uint16_t dns_wire_frame_len(const uint8_t *frame)
{
	return get16(frame);
}

void dns_wire_frame_set_len(uint8_t *frame, uint16_t len)
{
	put16(frame, len);
}

int dns_wire_rcode(const uint8_t *msg)
{
	return msg[3] & 0x0f;
}

/* A compression pointer must point before the start of the labels it continues, so
 * every chain of pointers strictly decreases and ends; DNS_WIRE_PTR_MAX bounds it
 * sooner, and the 255-byte limit bounds the labels. */
int dns_wire_name_read(const uint8_t *msg, size_t len, size_t *off, bool allow_ptr,
		       uint8_t out[DNS_WIRE_NAME_MAX], size_t *out_len)
{
	size_t p = *off, start = *off, o = 0, after = 0;
	unsigned hops = 0;

	for (;;) {
		uint8_t c;

		if (p >= len)
			return -EBADMSG;
		c = msg[p];
		if ((c & 0xc0) == 0xc0) {
			size_t target;

			if (!allow_ptr || p + 1 >= len || ++hops > DNS_WIRE_PTR_MAX)
				return -EBADMSG;
			target = (size_t)(c & 0x3f) << 8 | msg[p + 1];
			if (target >= start)
				return -EBADMSG;
			if (hops == 1)
				after = p + 2;
			p = start = target;
			continue;
		}
		if (c & 0xc0)
			return -EBADMSG; /* extended label types (RFC 6891 retired them) */
		if (p + 1 + c > len || o + 1 + c > DNS_WIRE_NAME_MAX)
			return -EBADMSG;
		out[o++] = c;
		for (size_t i = 0; i < c; i++)
			out[o++] = ascii_lower(msg[p + 1 + i]);
		p += 1 + (size_t)c;
		if (!c)
			break;
	}
	*off = hops ? after : p;
	*out_len = o;
	return 0;
}

bool dns_wire_name_text(const uint8_t *name, char out[DNS_WIRE_NAME_MAX + 1])
{
	size_t o = 0;
	bool clean = true;

	for (const uint8_t *p = name; *p; p += 1 + *p) {
		if (o)
			out[o++] = '.';
		for (size_t i = 1; i <= *p; i++) {
			uint8_t c = p[i];
			bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
				  c == '_';

			out[o++] = ok ? (char)c : '?';
			clean = clean && ok;
		}
	}
	out[o] = '\0';
	return clean;
}

int dns_wire_query_parse(const uint8_t *msg, size_t len, struct dns_wire_question *q)
{
	size_t off = DNS_WIRE_HDR;

	if (len < 3 || (msg[2] & DNS_FLAG_QR))
		return -EBADMSG;
	if (len < DNS_WIRE_HDR)
		return DNS_RCODE_FORMERR;
	if ((msg[2] >> 3 & 0x0f) != 0)
		return DNS_RCODE_NOTIMP;
	if (get16(msg + 4) != 1 || get16(msg + 6) || get16(msg + 8) ||
	    dns_wire_name_read(msg, len, &off, false, q->name, &q->name_len) < 0 || off + 4 > len)
		return DNS_RCODE_FORMERR;
	q->type = get16(msg + off);
	q->class = get16(msg + off + 2);
	q->end = off + 4;
	return 0;
}

size_t dns_wire_error(uint8_t out[DNS_WIRE_ERR_MAX], const uint8_t *msg, size_t qend, int rcode)
{
	memset(out, 0, DNS_WIRE_HDR);
	out[0] = msg[0];
	out[1] = msg[1];
	out[2] = (uint8_t)(DNS_FLAG_QR | (msg[2] & 0x79)); /* opcode and RD as asked */
	out[3] = (uint8_t)(DNS_FLAG_RA | rcode);
	if (qend <= DNS_WIRE_HDR)
		return DNS_WIRE_HDR;
	put16(out + 4, 1);
	memcpy(out + DNS_WIRE_HDR, msg + DNS_WIRE_HDR, qend - DNS_WIRE_HDR);
	return qend;
}

bool dns_wire_reply_matches(const uint8_t *msg, size_t len, uint16_t id,
			    const struct dns_wire_question *q, size_t *qend)
{
	uint8_t name[DNS_WIRE_NAME_MAX];
	size_t off = DNS_WIRE_HDR, nlen;
	uint16_t qd;

	if (len < DNS_WIRE_HDR || get16(msg) != id || !(msg[2] & DNS_FLAG_QR))
		return false;
	qd = get16(msg + 4);
	if (qd == 0 && dns_wire_rcode(msg) != DNS_RCODE_NOERROR) {
		*qend = DNS_WIRE_HDR;
		return true;
	}
	if (qd != 1 || dns_wire_name_read(msg, len, &off, false, name, &nlen) < 0 || off + 4 > len)
		return false;
	if (nlen != q->name_len || memcmp(name, q->name, nlen) || get16(msg + off) != q->type ||
	    get16(msg + off + 2) != q->class)
		return false;
	*qend = off + 4;
	return true;
}

struct dns_rr {
	size_t owner;   /* offset of the owner name */
	uint16_t type, class;
	uint32_t ttl;
	size_t rdata;
	uint16_t rdlen;
};

static bool chain_has(uint8_t chain[][DNS_WIRE_NAME_MAX], const size_t *clen, size_t n,
		      const uint8_t *name, size_t nlen)
{
	for (size_t i = 0; i < n; i++)
		if (clen[i] == nlen && !memcmp(chain[i], name, nlen))
			return true;
	return false;
}

/* Reads the answer section; a truncated reply keeps the records that arrived whole. */
static int answers_parse(const uint8_t *msg, size_t len, size_t off, struct dns_rr **out,
			 size_t *n)
{
	size_t an = get16(msg + 6), max = len / 11 + 1, i;
	uint8_t name[DNS_WIRE_NAME_MAX];
	struct dns_rr *rr;

	*out = NULL;
	*n = 0;
	if (!an)
		return 0;
	rr = calloc(an < max ? an : max, sizeof(*rr));
	if (!rr)
		return -ENOMEM;
	for (i = 0; i < an; i++) {
		size_t nlen, owner = off;

		if (i >= max || dns_wire_name_read(msg, len, &off, true, name, &nlen) < 0 ||
		    off + 10 > len)
			break;
		rr[i].owner = owner;
		rr[i].type = get16(msg + off);
		rr[i].class = get16(msg + off + 2);
		rr[i].ttl = get32(msg + off + 4);
		rr[i].rdlen = get16(msg + off + 8);
		rr[i].rdata = off + 10;
		off += 10 + (size_t)rr[i].rdlen;
		if (off > len)
			break;
	}
	if (i < an && !(msg[2] & DNS_FLAG_TC)) {
		free(rr);
		return -EBADMSG;
	}
	*out = rr;
	*n = i;
	return 0;
}

int dns_wire_answers(const uint8_t *msg, size_t len, size_t qend,
		     const struct dns_wire_question *q, dns_wire_addr_fn fn, void *ctx)
{
	uint8_t chain[DNS_CHAIN_MAX][DNS_WIRE_NAME_MAX], name[DNS_WIRE_NAME_MAX];
	size_t clen[DNS_CHAIN_MAX], n_chain = 1, n, nlen, off;
	struct dns_rr *rr;
	bool grew = true;
	int err;

	if (len < DNS_WIRE_HDR || qend > len)
		return -EBADMSG;
	err = answers_parse(msg, len, qend, &rr, &n);
	if (err < 0)
		return err;
	memcpy(chain[0], q->name, q->name_len);
	clen[0] = q->name_len;
	/* records may come in any order, so repeat until the chain stops growing */
	while (grew && n_chain < DNS_CHAIN_MAX) {
		grew = false;
		for (size_t i = 0; i < n && n_chain < DNS_CHAIN_MAX; i++) {
			if (rr[i].type != DNS_TYPE_CNAME || rr[i].class != DNS_CLASS_IN)
				continue;
			off = rr[i].owner;
			dns_wire_name_read(msg, len, &off, true, name, &nlen);
			if (!chain_has(chain, clen, n_chain, name, nlen))
				continue;
			off = rr[i].rdata;
			if (dns_wire_name_read(msg, rr[i].rdata + rr[i].rdlen, &off, true, name,
					       &nlen) < 0) {
				free(rr);
				return -EBADMSG;
			}
			if (chain_has(chain, clen, n_chain, name, nlen))
				continue;
			memcpy(chain[n_chain], name, nlen);
			clen[n_chain++] = nlen;
			grew = true;
		}
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t addr[16] = { 0 };
		uint32_t ttl = rr[i].ttl;

		if (rr[i].class != DNS_CLASS_IN ||
		    (rr[i].type != DNS_TYPE_A && rr[i].type != DNS_TYPE_AAAA))
			continue;
		off = rr[i].owner;
		dns_wire_name_read(msg, len, &off, true, name, &nlen);
		if (!chain_has(chain, clen, n_chain, name, nlen))
			continue;
		if (rr[i].type == DNS_TYPE_A && rr[i].rdlen == 4) {
			addr[10] = addr[11] = 0xff;
			memcpy(addr + 12, msg + rr[i].rdata, 4);
		} else if (rr[i].type == DNS_TYPE_AAAA && rr[i].rdlen == 16) {
			memcpy(addr, msg + rr[i].rdata, 16);
		} else {
			err = -EBADMSG;
			break;
		}
		/* RFC 2181 8: a TTL with the top bit set means zero */
		if (ttl & 0x80000000u)
			ttl = 0;
		if (fn && (err = fn(ctx, addr, ttl)) < 0)
			break;
	}
	free(rr);
	return err < 0 ? err : 0;
}
