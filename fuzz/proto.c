/* proto.c (fuzz target "proto"): protobuf-c's unpacking of every message of
 * lantern.v1.DataPlaneService (dataplane.proto), as either end of the tunnel unpacks
 * what the other sent: the node the control plane's responses and RunStream frames,
 * lantern-cp the nodes' requests and frames.
 *
 * Input: a byte choosing the message type, then the bytes on the wire. Property beyond
 * the sanitizers: a message that unpacks packs to bytes that unpack to a message packing
 * to the same bytes again (what one end re-sends, the other reads the same). Messages
 * carrying fields the proto does not know are left out of that: protobuf-c keeps them
 * as they came and accepts a tag of field 0 written in two bytes, which it refuses once
 * re-encoded in one (its quirk; lantern never re-sends what it received). */
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "lantern/v1/dataplane.pb-c.h"

static const ProtobufCMessageDescriptor *const types[] = {
	&lantern__v1__dp_register_request__descriptor,
	&lantern__v1__dp_register_response__descriptor,
	&lantern__v1__dp_heartbeat_request__descriptor,
	&lantern__v1__dp_heartbeat_ack__descriptor,
	&lantern__v1__dp_metrics_report__descriptor,
	&lantern__v1__dp_metrics_ack__descriptor,
	&lantern__v1__dp_refresh_token_request__descriptor,
	&lantern__v1__dp_refresh_token_response__descriptor,
	&lantern__v1__dp_run_stream_server_msg__descriptor,
	&lantern__v1__dp_run_stream_client_msg__descriptor,
	&lantern__v1__dp_hello__descriptor,
	&lantern__v1__dp_run_assignment__descriptor,
	&lantern__v1__dp_cancel_run__descriptor,
	&lantern__v1__dp_ping__descriptor,
	&lantern__v1__dp_pong__descriptor,
	&lantern__v1__dp_run_accepted__descriptor,
	&lantern__v1__dp_run_status_update__descriptor,
	&lantern__v1__dp_run_completed__descriptor,
	&lantern__v1__dp_completion_ack__descriptor,
};

static bool has_unknown(const ProtobufCMessage *m)
{
	if (!m)
		return false;
	if (m->n_unknown_fields)
		return true;
	for (unsigned i = 0; i < m->descriptor->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &m->descriptor->fields[i];

		if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
			continue;
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
			continue;
		if (has_unknown(*(const ProtobufCMessage *const *)((const char *)m + f->offset)))
			return true;
	}
	return false;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	uint8_t *b;

	*len = protobuf_c_message_get_packed_size(m);
	b = malloc(*len ? *len : 1);
	FZ_CHECK(b && protobuf_c_message_pack(m, b) == *len, "%s: packed size changed",
		 m->descriptor->name);
	return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const ProtobufCMessageDescriptor *d;
	ProtobufCMessage *m, *again;
	uint8_t *b1, *b2;
	size_t l1, l2;

	if (!size)
		return 0;
	d = types[data[0] % (sizeof(types) / sizeof(types[0]))];
	m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
	if (!m)
		return 0;
	FZ_CHECK(protobuf_c_message_check(m), "%s: unpacked message fails its own check", d->name);
	if (has_unknown(m)) {
		protobuf_c_message_free_unpacked(m, NULL);
		return 0;
	}
	b1 = pack(m, &l1);
	again = protobuf_c_message_unpack(d, NULL, l1, b1);
	FZ_CHECK(again, "%s: what it packed to does not unpack", d->name);
	b2 = pack(again, &l2);
	FZ_CHECK(l1 == l2 && !memcmp(b1, b2, l1), "%s: packs to %zu bytes, then to %zu different ones",
		 d->name, l1, l2);
	protobuf_c_message_free_unpacked(again, NULL);
	protobuf_c_message_free_unpacked(m, NULL);
	free(b1);
	free(b2);
	return 0;
}
