/* spec_int.h: what the spec module's files share and nothing outside uses: the YAML
 * node tree that keeps libyaml's marks for error messages, the error collector, and
 * the Kubernetes quantity and duration parsers. */
#ifndef LANTERN_SPEC_INT_H
#define LANTERN_SPEC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/spec.h"

enum snode_kind { SN_SCALAR, SN_MAP, SN_SEQ };

/* One YAML node. Mappings keep keys and values alternating in kids, in file order,
 * so duplicate keys survive parsing and can be reported. */
struct snode {
	enum snode_kind kind;
	int line, col;           /* 1-based, where the node starts */
	char *str;               /* scalars */
	bool plain;              /* unquoted scalar: may be null, a bool or a number */
	struct snode **kids;
	size_t n, cap;
	struct snode *all_next;  /* every node of a tree, for freeing */
};

/* Errors collected while parsing; sorted by position before they are handed out. */
struct serr {
	int line, col;
	size_t seq;              /* keeps equal positions in the order found */
	char *msg;
};

struct sctx {
	const char *file;
	struct serr *v;
	size_t n, cap;
	bool oom;
};

void sctx_error(struct sctx *c, int line, int col, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Parses the YAML text into a tree. Returns the root, or NULL with errors recorded
 * (syntax error, empty file, more than one document, aliases). *all receives every
 * node for snode_free_all, also on failure. */
struct snode *snode_parse(struct sctx *c, const char *buf, size_t len, struct snode **all);
void snode_free_all(struct snode *all);

/* ---- the schema walkers spec.c and pools.c share ---- */

/* One field of a mapping's schema and, after walk_map, its key and value nodes. */
struct field {
	const char *name;
	struct snode *key, *val;
};

bool is_null(const struct snode *n);
/* Absent and explicit null both mean "not set", as in Kubernetes. */
bool unset(const struct snode *n);
const char *kind_name(const struct snode *n);
/* Checks n is a mapping whose keys are unique and all in f; sets f[].key/val. what
 * names the mapping in the unknown-field message. */
bool walk_map(struct sctx *c, struct snode *n, const char *path, const char *what, struct field *f,
	      size_t nf);
struct snode *field_val(struct field *f, size_t nf, const char *name);
void missing(struct sctx *c, const struct snode *parent, const char *path);
char *get_str(struct sctx *c, const struct snode *n, const char *path);
bool get_uint(struct sctx *c, const struct snode *n, const char *path, uint64_t *out);
bool get_enum(struct sctx *c, const struct snode *n, const char *path, const char *what,
	      const char *const *names, size_t nn, int *out);
/* DNS-1123 subdomain, as Kubernetes names objects. */
bool valid_name(const char *s);
/* sha256:HEX64 or sha512:HEX128. */
bool valid_digest(const char *d);
void parse_quantity(struct sctx *c, struct snode *v, const char *path, bool milli, uint64_t *out);
/* Moves the collected errors, in file order, into errs. */
void hand_out(struct sctx *c, struct spec_errors *errs);
/* Reads path whole; when it cannot, errs (may be NULL) holds "PATH: cannot read: why". */
int read_input(const char *path, char **buf, size_t *len, struct spec_errors *errs);

/* Kubernetes quantity -> units: milli = true gives thousandths rounded to the nearest
 * ("500m" -> 500, "2" -> 2000), false gives whole units and refuses fractions (bytes).
 * Returns NULL, or the reason the text is refused. */
const char *spec_quantity(const char *s, bool milli, uint64_t *out);
/* "30s", "5m", "1h30m", "250ms"; a bare number is seconds. Milliseconds, rounded. */
const char *spec_duration(const char *s, uint64_t *out_ms);

#endif
