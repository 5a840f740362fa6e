/* sock_rule.bpf.h: the maps both BPF objects use for egress_rules[].rate_bps.
 * egress.bpf.c, at connect, writes the rule that admitted the connection into the
 * socket's storage (lantern_sock_rule) and, if that rule has a token bucket in
 * lantern_tm_rate, caps the socket's pacing rate (TCP then paces itself below the
 * limit instead of losing packets); telemetry.bpf.c charges every packet the socket
 * sends to that bucket in cgroup_skb egress and drops what exceeds it, so a socket
 * that raises its own pacing cap is still held to the rate. Both objects declare the
 * maps from here; lbpf pins each once and the other object reuses the pin. */
#ifndef LANTERN_SOCK_RULE_BPF_H
#define LANTERN_SOCK_RULE_BPF_H

#include "telemetry.h"

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct lantern_sock_rule);
} lantern_sock_rule SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LANTERN_TM_RATE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lantern_rate_key);
	__type(value, struct lantern_rate_bucket);
} lantern_tm_rate SEC(".maps");

#endif
