/* egress_maps.bpf.h: the egress maps both BPF objects use. egress.bpf.c owns them;
 * telemetry.bpf.c's cgroup_skb egress program (the one program at that hook) needs the
 * instance's mode and audit flags to drop packets the socket hooks could not judge
 * (source routes, non-TCP/UDP sockets), and reports each drop through the same ring
 * buffer as every other deny, so lanternd turns it into the same JSON line. Both
 * objects declare the maps from here; lbpf pins them once and the object loaded second
 * reuses the pins (libbpf refuses a pin whose definition differs). */
#ifndef LANTERN_EGRESS_MAPS_BPF_H
#define LANTERN_EGRESS_MAPS_BPF_H

#include "lantern.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lantern_config);
} lantern_config SEC(".maps");

/* Not preallocated: a replaced value is freed only after an RCU grace period, so a
 * program that looked it up never reads an element recycled for another instance. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LANTERN_MAX_INSTANCES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct lantern_instance);
} lantern_instances SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LANTERN_MAX_INSTANCES);
	__type(key, __u64);
	__type(value, struct lantern_pkt_stats);
} lantern_pkt_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lantern_drops);
} lantern_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, LANTERN_EVENTS_BYTES);
} lantern_events SEC(".maps");

#endif
