/* yaml.c: agent.yaml text -> a small node tree built from libyaml's events, and the
 * module's error collector.
 *
 * The event API is used instead of libyaml's document loader so that every node keeps
 * the mark where it starts (for FILE:LINE:COL in errors) and the tree stays ours: plain
 * structs the validator walks, with mapping keys in file order, duplicates included. */
#include "spec_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

void sctx_error(struct sctx *c, int line, int col, const char *path, const char *fmt, ...)
{
	char reason[1024];
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct serr *v = realloc(c->v, cap * sizeof(*v));

		if (!v) {
			c->oom = true;
			return;
		}
		c->v = v;
		c->cap = cap;
	}
	if (asprintf(&msg, "%s:%d:%d: %s%s%s", c->file, line, col, path ? path : "",
		     path ? ": " : "", reason) < 0) {
		c->oom = true;
		return;
	}
	c->v[c->n] = (struct serr){ .line = line, .col = col, .seq = c->n, .msg = msg };
	c->n++;
}

static struct snode *node_new(struct sctx *c, enum snode_kind kind, yaml_mark_t m,
			      struct snode **all)
{
	struct snode *n = calloc(1, sizeof(*n));

	if (!n) {
		c->oom = true;
		return NULL;
	}
	n->kind = kind;
	n->line = (int)m.line + 1;
	n->col = (int)m.column + 1;
	n->all_next = *all;
	*all = n;
	return n;
}

static bool node_add(struct sctx *c, struct snode *parent, struct snode *kid)
{
	if (parent->n == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 8;
		struct snode **k = realloc(parent->kids, cap * sizeof(*k));

		if (!k) {
			c->oom = true;
			return false;
		}
		parent->kids = k;
		parent->cap = cap;
	}
	parent->kids[parent->n++] = kid;
	return true;
}

void snode_free_all(struct snode *all)
{
	while (all) {
		struct snode *next = all->all_next;

		free(all->str);
		free(all->kids);
		free(all);
		all = next;
	}
}

#define MAX_DEPTH 64

struct snode *snode_parse(struct sctx *c, const char *buf, size_t len, struct snode **all)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	struct snode *stack[MAX_DEPTH], *root = NULL;
	int depth = 0, docs = 0;
	bool done = false, failed = false;

	*all = NULL;
	if (!yaml_parser_initialize(&parser)) {
		c->oom = true;
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	while (!done) {
		struct snode *n = NULL;

		if (!yaml_parser_parse(&parser, &ev)) {
			const char *what = parser.problem ? parser.problem : "invalid YAML";

			if (parser.context)
				sctx_error(c, (int)parser.problem_mark.line + 1,
					   (int)parser.problem_mark.column + 1, NULL,
					   "YAML syntax error: %s (%s that starts at %d:%d)", what,
					   parser.context, (int)parser.context_mark.line + 1,
					   (int)parser.context_mark.column + 1);
			else
				sctx_error(c, (int)parser.problem_mark.line + 1,
					   (int)parser.problem_mark.column + 1, NULL,
					   "YAML syntax error: %s", what);
			failed = true;
			break;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1) {
				sctx_error(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
					   NULL, "more than one YAML document; agent.yaml holds one "
					   "AgentSpec");
				failed = true;
				done = true;
			}
			break;
		case YAML_ALIAS_EVENT:
			sctx_error(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
				   NULL, "YAML aliases (*%s) are not supported in agent.yaml",
				   (const char *)ev.data.alias.anchor);
			failed = true;
			done = true;
			break;
		case YAML_SCALAR_EVENT:
			n = node_new(c, SN_SCALAR, ev.start_mark, all);
			if (n) {
				n->str = strndup((const char *)ev.data.scalar.value,
						 ev.data.scalar.length);
				n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
				if (!n->str)
					c->oom = true;
			}
			break;
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			n = node_new(c, ev.type == YAML_MAPPING_START_EVENT ? SN_MAP : SN_SEQ,
				     ev.start_mark, all);
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			break;
		default:
			break;
		}
		if (n) {
			if (depth > 0 && !node_add(c, stack[depth - 1], n))
				done = true;
			else if (depth == 0)
				root = n;
			if (n->kind != SN_SCALAR) {
				if (depth == MAX_DEPTH) {
					sctx_error(c, n->line, n->col, NULL,
						   "nested deeper than %d levels", MAX_DEPTH);
					failed = true;
					done = true;
				} else {
					stack[depth++] = n;
				}
			}
		}
		yaml_event_delete(&ev);
		if (c->oom)
			failed = done = true;
	}
	yaml_parser_delete(&parser);
	if (failed)
		return NULL;
	if (!docs) {
		sctx_error(c, 1, 1, NULL, "the file is empty; expected an AgentSpec");
		return NULL;
	}
	return root;
}
