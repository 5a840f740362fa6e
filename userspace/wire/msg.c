/* msg.c: the link's messages as fields (see wire.h): little-endian integers, byte
 * strings with a length, descriptors beside them; reading checks every bound and marks
 * the message bad rather than reading past it. And the one structured payload, a
 * harness call, both ways. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lantern/wire.h"

void wire_msg_init(struct wire_msg *m, uint16_t type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
}

void wire_msg_free(struct wire_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	free(m->buf);
	memset(m, 0, sizeof(*m));
}

static void put(struct wire_msg *m, const void *p, size_t n)
{
	if (m->bad)
		return;
	if (m->len + n > WIRE_MAX_FRAME) {
		m->bad = true;
		return;
	}
	if (m->len + n > m->cap) {
		size_t cap = m->cap ? m->cap : 256;
		uint8_t *b;

		while (cap < m->len + n)
			cap *= 2;
		if (!(b = realloc(m->buf, cap))) {
			m->bad = true;
			return;
		}
		m->buf = b;
		m->cap = cap;
	}
	memcpy(m->buf + m->len, p, n);
	m->len += n;
}

static void put_le(struct wire_msg *m, uint64_t v, size_t n)
{
	uint8_t b[8];

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(m, b, n);
}

void wire_put_u8(struct wire_msg *m, uint8_t v) { put_le(m, v, 1); }
void wire_put_u16(struct wire_msg *m, uint16_t v) { put_le(m, v, 2); }
void wire_put_u32(struct wire_msg *m, uint32_t v) { put_le(m, v, 4); }
void wire_put_u64(struct wire_msg *m, uint64_t v) { put_le(m, v, 8); }

void wire_put_bytes(struct wire_msg *m, const void *p, size_t n)
{
	if (n > UINT32_MAX) {
		m->bad = true;
		return;
	}
	wire_put_u32(m, (uint32_t)n);
	put(m, p, n);
}

void wire_put_str(struct wire_msg *m, const char *s)
{
	wire_put_bytes(m, s ? s : "", s ? strlen(s) : 0);
}

void wire_put_fd(struct wire_msg *m, int fd)
{
	int d;

	if (m->nfds == WIRE_MAX_FDS || (d = dup(fd)) < 0) {
		m->bad = true;
		return;
	}
	m->fds[m->nfds++] = d;
}

static uint64_t get_le(struct wire_msg *m, size_t n)
{
	uint64_t v = 0;

	if (m->bad || m->len - m->off < n) {
		m->bad = true;
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)m->buf[m->off + i] << (8 * i);
	m->off += n;
	return v;
}

uint8_t wire_get_u8(struct wire_msg *m) { return (uint8_t)get_le(m, 1); }
uint16_t wire_get_u16(struct wire_msg *m) { return (uint16_t)get_le(m, 2); }
uint32_t wire_get_u32(struct wire_msg *m) { return (uint32_t)get_le(m, 4); }
uint64_t wire_get_u64(struct wire_msg *m) { return get_le(m, 8); }

const uint8_t *wire_get_bytes(struct wire_msg *m, size_t max, size_t *n)
{
	uint32_t len = wire_get_u32(m);
	const uint8_t *p;

	if (m->bad || len > max || m->len - m->off < len) {
		m->bad = true;
		*n = 0;
		return NULL;
	}
	p = m->buf + m->off;
	m->off += len;
	*n = len;
	return p;
}

bool wire_get_str(struct wire_msg *m, char *buf, size_t cap)
{
	size_t n;
	const uint8_t *p = wire_get_bytes(m, cap - 1, &n);

	if (!p || memchr(p, '\0', n)) {
		m->bad = true;
		buf[0] = '\0';
		return false;
	}
	memcpy(buf, p, n);
	buf[n] = '\0';
	return true;
}

int wire_take_fd(struct wire_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++) {
		if (m->fds[i] >= 0) {
			int fd = m->fds[i];

			m->fds[i] = -1;
			return fd;
		}
	}
	m->bad = true;
	return -1;
}

bool wire_msg_done(const struct wire_msg *m)
{
	return !m->bad && m->off == m->len;
}

/* ---- a harness call ---- */

void wire_put_call(struct wire_msg *m, const struct harness_call *c)
{
	const struct harness_usage *u = &c->usage;

	wire_put_u8(m, (uint8_t)c->op);
	wire_put_str(m, c->step_id);
	wire_put_str(m, c->kind);
	wire_put_u8(m, c->have_digest);
	wire_put_str(m, c->digest);
	wire_put_u8(m, c->have_attempt);
	wire_put_u32(m, c->attempt);
	wire_put_u8(m, c->have_exit_code);
	wire_put_u64(m, (uint64_t)c->exit_code);
	wire_put_u8(m, u->present);
	wire_put_u32(m, u->has);
	wire_put_str(m, u->provider);
	wire_put_str(m, u->model);
	wire_put_str(m, u->operation);
	wire_put_str(m, u->response_model);
	wire_put_u64(m, u->t.input);
	wire_put_u64(m, u->t.output);
	wire_put_u64(m, u->t.cache_read);
	wire_put_u64(m, u->t.cache_creation);
	wire_put_u64(m, u->t.reasoning);
	wire_put_str(m, c->tool);
	wire_put_str(m, c->error);
	wire_put_u8(m, c->retryable);
	wire_put_u8(m, c->value != NULL);
	wire_put_u8(m, c->value_b64);
	wire_put_bytes(m, c->value ? c->value : "", c->value ? c->value_len : 0);
	wire_put_str(m, c->env_name);
	wire_put_str(m, c->sig_ts);
	wire_put_str(m, c->sig_nonce);
	wire_put_str(m, c->sig);
	wire_put_bytes(m, c->body_sha256, sizeof(c->body_sha256));
}

/* One balanced JSON value and nothing else: the bytes go into a journal record as they
 * are, so they must not be able to close its object early or open another. Checked by
 * walking brackets and strings, not by parsing. */
static bool one_value(const uint8_t *p, size_t n)
{
	size_t i = 0;
	int depth = 0;
	bool scalar = false;

	while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t' || p[i] == '\r'))
		i++;
	if (i == n)
		return false;
	for (; i < n; i++) {
		uint8_t ch = p[i];

		if (ch == '"') {
			for (i++; i < n && p[i] != '"'; i++) {
				if (p[i] == '\\')
					i++;
				else if (p[i] < 0x20)
					return false;
			}
			if (i >= n)
				return false;
			if (!depth && (scalar = true) && i + 1 != n)
				return false;
			continue;
		}
		if (ch == '{' || ch == '[') {
			if (!depth && scalar)
				return false;
			depth++;
		} else if (ch == '}' || ch == ']') {
			if (--depth < 0)
				return false;
			if (!depth && i + 1 != n)
				return false;
		} else if (!depth) {
			/* a bare number, true, false or null */
			if (!((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.' || ch == 'e' ||
			      ch == 'E' || (ch >= 'a' && ch <= 'z')))
				return false;
			scalar = true;
		} else if (ch < 0x20 && ch != ' ' && ch != '\n' && ch != '\t' && ch != '\r') {
			return false;
		}
	}
	return depth == 0;
}

int wire_get_call(struct wire_msg *m, struct harness_call *c, char *why, size_t len)
{
	struct harness_usage *u = &c->usage;
	const uint8_t *v, *digest;
	size_t n, dn = 0;
	bool have_value;

	memset(c, 0, sizeof(*c));
	c->op = (enum harness_op)wire_get_u8(m);
	wire_get_str(m, c->step_id, sizeof(c->step_id));
	wire_get_str(m, c->kind, sizeof(c->kind));
	c->have_digest = wire_get_u8(m);
	wire_get_str(m, c->digest, sizeof(c->digest));
	c->have_attempt = wire_get_u8(m);
	c->attempt = wire_get_u32(m);
	c->have_exit_code = wire_get_u8(m);
	c->exit_code = (int64_t)wire_get_u64(m);
	u->present = wire_get_u8(m);
	u->has = wire_get_u32(m);
	wire_get_str(m, u->provider, sizeof(u->provider));
	wire_get_str(m, u->model, sizeof(u->model));
	wire_get_str(m, u->operation, sizeof(u->operation));
	wire_get_str(m, u->response_model, sizeof(u->response_model));
	u->t.input = wire_get_u64(m);
	u->t.output = wire_get_u64(m);
	u->t.cache_read = wire_get_u64(m);
	u->t.cache_creation = wire_get_u64(m);
	u->t.reasoning = wire_get_u64(m);
	wire_get_str(m, c->tool, sizeof(c->tool));
	wire_get_str(m, c->error, sizeof(c->error));
	c->retryable = wire_get_u8(m);
	have_value = wire_get_u8(m);
	c->value_b64 = wire_get_u8(m);
	v = wire_get_bytes(m, HARNESS_MAX_BODY * 4, &n);
	wire_get_str(m, c->env_name, sizeof(c->env_name));
	wire_get_str(m, c->sig_ts, sizeof(c->sig_ts));
	wire_get_str(m, c->sig_nonce, sizeof(c->sig_nonce));
	wire_get_str(m, c->sig, sizeof(c->sig));
	digest = wire_get_bytes(m, sizeof(c->body_sha256), &dn);
	if (digest && dn == sizeof(c->body_sha256))
		memcpy(c->body_sha256, digest, dn);
	if (!wire_msg_done(m) || dn != sizeof(c->body_sha256)) {
		snprintf(why, len, "a call from lantern-wire is malformed");
		return -EBADMSG;
	}
	if (c->op < HOP_INPUT || c->op > HOP_SECRET || (c->op == HOP_SECRET && !c->env_name[0]) ||
	    ((c->op == HOP_BEGIN || c->op == HOP_COMPLETE || c->op == HOP_FAIL) && !c->step_id[0]) ||
	    (c->op == HOP_BEGIN && strcmp(c->kind, "llm") && strcmp(c->kind, "tool") && strcmp(c->kind, "other")) ||
	    (c->op == HOP_OUTPUT && !have_value)) {
		snprintf(why, len, "a call from lantern-wire is not one lanternd answers");
		return -EBADMSG;
	}
	if (have_value) {
		if (!one_value(v, n) || (c->value_b64 && v[0] != '"')) {
			snprintf(why, len, "a value from lantern-wire is not one JSON value");
			return -EBADMSG;
		}
		if (!(c->value = malloc(n + 1))) {
			snprintf(why, len, "out of memory");
			return -ENOMEM;
		}
		memcpy(c->value, v, n);
		c->value[n] = '\0';
		c->value_len = n;
	}
	return 0;
}
