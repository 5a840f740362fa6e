/* receipt.c: a run's receipt. Canonical JSON (RFC 8785) of what the run was (run,
 * tenant, instance and its public key, image, isolation class and handler, the digest
 * of its compiled egress policy) and what it did (status and reason, start and end, its
 * journal's head hash and record count, cost components and tokens), signed by the
 * node key as a compact JWS. Since the head hash commits to every journal record
 * before it, the signature covers the whole run; durable appends the receipt after the
 * run_completed record, as the journal's last record. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"
#include "lantern/egress.h"

static void set_str(json_t *j, const char *k, const char *v)
{
	json_object_set_new(j, k, json_string(v ? v : ""));
}

static json_t *receipt_json(struct identity *id, struct run *r, struct id_run *ir,
			    const struct identity_journal *jh)
{
	const struct spec *s = run_spec(r);
	json_t *rec = run_json(r), *j = json_object();
	char head[65], host[256] = "";
	uint8_t pd[32];

	sodium_bin2hex(head, sizeof(head), jh->head, sizeof(jh->head));
	gethostname(host, sizeof(host) - 1);
	json_object_set_new(j, "typ", json_string("lantern-receipt"));
	json_object_set_new(j, "v", json_integer(1));
	set_str(j, "run_id", run_id(r));
	if (ir && ir->remote_run_id[0])
		set_str(j, "platform_run_id", ir->remote_run_id);
	set_str(j, "tenant_id", run_tenant(r));
	set_str(j, "agent_instance_id", run_instance_id(r));
	if (ir)
		json_object_set_new(j, "instance_public_key", jose_jwk(ir->pk));
	set_str(j, "image_digest", s ? s->image_digest : "");
	if (json_string_value(json_object_get(rec, "image")))
		set_str(j, "image_manifest", json_string_value(json_object_get(rec, "image")));
	set_str(j, "isolation", s ? spec_isolation_name(s->isolation) : "");
	set_str(j, "runtime", json_string_value(json_object_get(rec, "runtime")));
	set_str(j, "handler", json_string_value(json_object_get(rec, "handler")) ?:
		json_string_value(json_object_get(rec, "runtime")));
	if (id->o.egress && egress_policy_digest(id->o.egress, r, pd) == 0) {
		char hex[65];

		sodium_bin2hex(hex, sizeof(hex), pd, sizeof(pd));
		set_str(j, "egress_policy_sha256", hex);
	}
	set_str(j, "status", run_status_name(run_status(r)));
	set_str(j, "reason", run_reason(r));
	json_object_set_new(j, "exit_code", json_integer(run_exit_code(r)));
	json_object_set_new(j, "started_at", json_integer(run_created(r)));
	json_object_set_new(j, "ended_at", json_integer(run_finished(r)));
	json_object_set_new(j, "journal", json_pack("{s:s, s:I}", "head_sha256", head, "records",
						    (json_int_t)jh->records));
	json_object_set_new(j, "cost", jh->cost ? json_deep_copy(jh->cost) : json_null());
	json_object_set_new(j, "cost_usd", json_real(jh->cost_usd));
	json_object_set_new(j, "tokens", json_integer((json_int_t)jh->tokens));
	json_object_set_new(j, "steps_completed", json_integer((json_int_t)jh->steps_completed));
	json_object_set_new(j, "node", json_pack("{s:s, s:s, s:s}", "kid", id->node_kid, "hostname", host,
						 "region", id->region));
	json_object_set_new(j, "issued_at", json_integer((json_int_t)time(NULL)));
	json_decref(rec);
	return j;
}

char *identity_receipt_seal(struct identity *id, struct run *r, const struct identity_journal *jh)
{
	json_t *j = receipt_json(id, r, identity_run_of(id, r), jh);
	char *payload = j ? jose_jcs(j) : NULL, *jws = NULL, path[PATH_MAX + 16];
	int err;

	json_decref(j);
	if (payload)
		jws = jose_sign(id->node_sk, id->node_kid, "lantern-receipt+jws", payload, strlen(payload));
	free(payload);
	if (!jws) {
		log_error("run %s: no receipt: out of memory", run_id(r));
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/receipt.jws", run_dir(r));
	if ((err = util_write_file_atomic(path, jws, strlen(jws))) < 0)
		log_error("run %s: receipt not kept in %s: %s (it is in the journal)", run_id(r), path,
			  strerror(-err));
	id->receipts++;
	return jws;
}

char *identity_receipt(const struct run *r)
{
	char path[PATH_MAX + 16], *buf = NULL;

	snprintf(path, sizeof(path), "%s/receipt.jws", run_dir(r));
	if (util_read_file(path, &buf, NULL) < 0)
		return NULL;
	return buf;
}
