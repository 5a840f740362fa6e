/* dns_wire.h: the FQDN proxy's DNS wire codec, bytes in and bytes out: no sockets, no
 * loop, no state between calls, so tests and fuzzers call it directly. Every message is
 * hostile (a workload's query, or an upstream's answer to a name a workload chose): every
 * read is bounds-checked, names are decoded in a loop with a bound on compression
 * pointers, and nothing recurses on input.
 *
 * Names are kept in canonical wire form: uncompressed, lowercase ASCII, ending in the
 * root label, at most 255 bytes. */
#ifndef LANTERN_DNS_WIRE_H
#define LANTERN_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_WIRE_HDR 12
#define DNS_WIRE_NAME_MAX 255
#define DNS_WIRE_MSG_MAX 65535
/* The longest reply dns_wire_error builds: a header and one question. */
#define DNS_WIRE_ERR_MAX (DNS_WIRE_HDR + DNS_WIRE_NAME_MAX + 4)
/* Compression pointers followed in one name. Every pointer must also point before the
 * labels it continues, so loops are impossible anyway; the bound caps the work per name
 * whatever the message length. A name of 255 bytes has at most 127 labels. */
#define DNS_WIRE_PTR_MAX 127

enum {
	DNS_RCODE_NOERROR = 0,
	DNS_RCODE_FORMERR = 1,
	DNS_RCODE_SERVFAIL = 2,
	DNS_RCODE_NOTIMP = 4,
	DNS_RCODE_REFUSED = 5,
};

enum {
	DNS_TYPE_A = 1,
	DNS_TYPE_CNAME = 5,
	DNS_TYPE_AAAA = 28,
	DNS_TYPE_IXFR = 251,
	DNS_TYPE_AXFR = 252,
	DNS_CLASS_IN = 1,
};

struct dns_wire_question {
	uint8_t name[DNS_WIRE_NAME_MAX]; /* canonical */
	size_t name_len;
	uint16_t type, class;
	size_t end;                      /* offset just past the question in its message */
};

/* The ID of msg (at least 2 bytes), and setting it. */
uint16_t dns_wire_id(const uint8_t *msg);
void dns_wire_set_id(uint8_t *msg, uint16_t id);
/* DNS over TCP puts each message's length, 2 bytes, before it (RFC 1035 4.2.2). */
uint16_t dns_wire_frame_len(const uint8_t *frame);
void dns_wire_frame_set_len(uint8_t *frame, uint16_t len);
/* The RCODE of msg (at least DNS_WIRE_HDR bytes). */
int dns_wire_rcode(const uint8_t *msg);

/* Reads the name at *off of msg into out (canonical) and moves *off past it. allow_ptr
 * false refuses compression (a query's question has nothing before it to point to).
 * Returns 0 or -EBADMSG: past the end, longer than 255 bytes, a reserved label type, a
 * pointer forward or to itself, more than DNS_WIRE_PTR_MAX pointers. */
int dns_wire_name_read(const uint8_t *msg, size_t len, size_t *off, bool allow_ptr,
		       uint8_t out[DNS_WIRE_NAME_MAX], size_t *out_len);
/* Presentation form of a canonical name, without the trailing dot ("" for the root).
 * Returns false when a label holds anything but letters, digits, '-' or '_' (written
 * as '?'): such a name cannot match a hostname pattern, and a '.' inside a label would
 * make the text lie about the name. */
bool dns_wire_name_text(const uint8_t *name, char out[DNS_WIRE_NAME_MAX + 1]);

/* Judges a client's message. Returns 0 for a standard query with exactly one question
 * (q filled); DNS_RCODE_FORMERR or DNS_RCODE_NOTIMP to answer it with (no question
 * echoed); or -EBADMSG when nothing may be answered: shorter than an ID and the flags
 * that say it is a query, or a response (answering one could bounce forever between two
 * servers). */
int dns_wire_query_parse(const uint8_t *msg, size_t len, struct dns_wire_question *q);
/* Builds an answer with rcode to the query msg: its ID, opcode and RD, and its question
 * when qend (the end of the question) is past the header, else no question. msg holds at
 * least 3 bytes, and qend bytes when qend > DNS_WIRE_HDR. Returns the length. */
size_t dns_wire_error(uint8_t out[DNS_WIRE_ERR_MAX], const uint8_t *msg, size_t qend, int rcode);

/* Is msg the answer, with ID id, to question q? A reply without a question is accepted
 * only as an error, which is how some servers answer what they cannot parse. Sets *qend
 * to the end of its question. */
bool dns_wire_reply_matches(const uint8_t *msg, size_t len, uint16_t id,
			    const struct dns_wire_question *q, size_t *qend);

/* Called once per A or AAAA record; addr is 16 bytes (IPv4 mapped), ttl with RFC 2181's
 * top-bit rule applied. Returns 0, or -errno to stop. */
typedef int (*dns_wire_addr_fn)(void *ctx, const uint8_t addr[16], uint32_t ttl);
/* Hands fn every A/AAAA of the answer section of msg (question q, ending at qend) whose
 * owner is q's name or reachable from it through CNAMEs (at most 16 names). A reply with
 * TC set keeps the records that arrived whole; without TC a cut record is an error.
 * Returns 0, -EBADMSG for an unreadable answer section or an address of the wrong size,
 * -ENOMEM, or fn's error. */
int dns_wire_answers(const uint8_t *msg, size_t len, size_t qend,
		     const struct dns_wire_question *q, dns_wire_addr_fn fn, void *ctx);

#endif
