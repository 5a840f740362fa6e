# Lantern node agent: build, test, demo, benchmark.
#   make          build everything into build/
#   make deps     install Debian packages (again only when scripts/deps.sh changes) and
#                 prepare the host (bpffs, tracefs: every time, mounts do not survive a reboot)
#   make check    deps + build + every test (tests/kselftest-style)
#   make demo     deps + build + a short demonstration
#   make bench    deps + build + benchmarks (bench/)
#   make image    the DaemonSet's OCI image (build/image), its digest pinned in
#                 deploy/daemonset/kustomization.yaml
#   make fuzz     deps + the fuzz targets (fuzz/), each run FUZZ_SECONDS (default 60)

BUILD    := build
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
ARCH     := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
            -Wno-missing-field-initializers -Wno-format-truncation -Iinclude -Ibpf -I$(BUILD) \
            -I/usr/include/postgresql
# Each compile writes the headers it read to a .d file beside its output (read back at
# the end), so a header change rebuilds the objects that include it, and only those.
DEPFLAGS := -MMD -MP
# A library named on a link line but not called by that binary is not recorded as its
# dependency. Debian's gcc does this by default; said here for any toolchain, and never
# switched off again on a link line.
LDFLAGS  ?=
LDFLAGS  += -Wl,--as-needed

# Each binary links the libraries its code and the liblantern.a members it pulls in call:
#   lbpf -lbpf; image, journal -lz; spec -lyaml; JSON -ljansson; keys, hashes -lsodium;
#   the journal's SHA-256 chain -lcrypto (libcrypto: the CPU's SHA extensions; lanternd
#   loads it anyway through gRPC and libcurl);
#   rpc, tunnel, otlp and the protobuf-c code -lgrpc -lgpr -lprotobuf-c;
#   otlp over HTTP and the CLI's control-plane client -lcurl; the metrics endpoint and
#   lantern-cp's API -lmicrohttpd; syscall names in telemetry -lseccomp;
#   lantern-cp's state -lsqlite3 -lpq; the journal store (journal/store.c) -lpq; the
#   journal chain's SHA-256 -lcrypto; threads -lpthread (part of libc on glibc 2.34+).
LIBS_CORE  := -lbpf -lz -lyaml -ljansson -lsodium -lcrypto -lpq -lpthread
LIBS_GRPC  := -lgrpc -lgpr -lprotobuf-c
D_LDLIBS   := $(LIBS_CORE) $(LIBS_GRPC) -lcurl -lmicrohttpd -lseccomp
CLI_LDLIBS := $(LIBS_CORE) -lcurl
CP_LDLIBS  := -lyaml -ljansson -lsodium $(LIBS_GRPC) -lmicrohttpd -lsqlite3 -lpq -lpthread
# lantern-wire, the unprivileged parser: HTTP, JSON, DNS, its own seccomp filter
WIRE_LDLIBS := -ljansson -lsodium -lseccomp
# tests and benches reach into every module; each keeps what it calls
TEST_LDLIBS  := $(D_LDLIBS)
BENCH_LDLIBS := $(D_LDLIBS) -lm

# dataplane.proto → protobuf-c code in build/proto. The service block is left out of
# what protoc-c sees: its generated C stub names a member `register`, a C keyword, and
# the gRPC method paths are spelled in userspace/rpc anyway. timestamp.proto comes
# from libprotobuf-dev.
PROTO_INC   ?= /usr/include
PROTO_SRCS  := $(wildcard proto/lantern/v1/*.proto)
PROTO_GEN_C := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(PROTO_SRCS)) \
               $(BUILD)/proto/google/protobuf/timestamp.pb-c.c
PROTO_GEN_H := $(PROTO_GEN_C:.c=.h)
PROTO_OBJS  := $(patsubst $(BUILD)/proto/%.c,$(BUILD)/obj/proto/%.o,$(PROTO_GEN_C))
CFLAGS      += -I$(BUILD)/proto

# lantern-cp, the control plane (tools/lantern-cp)
CP_SRCS   := $(wildcard tools/lantern-cp/*.c)
CP_OBJS   := $(patsubst %.c,$(BUILD)/obj/%.o,$(CP_SRCS))

# telemetry (issue 5): the OTLP protos (proto/opentelemetry) -> protobuf-c code in
# build/proto/opentelemetry
OTLP_PROTOS := $(sort $(shell find proto/opentelemetry -name '*.proto'))
OTLP_GEN_C  := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(OTLP_PROTOS))
OTLP_GEN_H  := $(OTLP_GEN_C:.c=.h)
OTLP_OBJS   := $(patsubst $(BUILD)/proto/%.c,$(BUILD)/obj/otlp/%.o,$(OTLP_GEN_C))

# the CRI subset lanternd speaks to containerd (proto/runtime/v1, issue 10) -> protobuf-c
# code in build/proto/runtime/v1
CRI_PROTOS := $(wildcard proto/runtime/v1/*.proto)
CRI_GEN_C  := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(CRI_PROTOS))
CRI_GEN_H  := $(CRI_GEN_C:.c=.h)
CRI_OBJS   := $(patsubst $(BUILD)/proto/%.c,$(BUILD)/obj/cri/%.o,$(CRI_GEN_C))

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
SKELS    := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))

LIB_SRCS := $(filter-out userspace/lanternd/%,$(wildcard userspace/*/*.c))
LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
LIB      := $(BUILD)/liblantern.a

D_SRCS   := $(wildcard userspace/lanternd/*.c)
D_OBJS   := $(patsubst %.c,$(BUILD)/obj/%.o,$(D_SRCS))
CLI_SRCS := $(wildcard tools/lantern/*.c)
CLI_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(CLI_SRCS))
WIRE_SRCS:= $(wildcard tools/wire/*.c)
WIRE_OBJS:= $(patsubst %.c,$(BUILD)/obj/%.o,$(WIRE_SRCS))
SHIM_SRCS:= $(wildcard tools/shim/*.c)
SHIM_OBJS:= $(patsubst %.c,$(BUILD)/obj/%.o,$(SHIM_SRCS))
# The shim runs beside every workload for its whole life: it links the modules it calls,
# which need libc alone, not liblantern.a and its libraries.
SHIM_MODS:= $(BUILD)/obj/userspace/cgroup/cgroup.o $(BUILD)/obj/userspace/util/util.o
# lantern-oci, the runtime handler containerd execs for every container of lantern's
# handlers (issue 10): as small as the shim, plus jansson for config.json and lanternd's
# answers. Static: it is installed onto nodes whose libraries are not ours, and it runs
# for every runtime command of every container (no loader work: ~1.5 ms less per exec)
OCI_SRCS := $(wildcard tools/lantern-oci/*.c)
OCI_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(OCI_SRCS))
# lantern-waiter, a pooled sandbox's first process (docs/pools.md): static, libc only, for
# it runs inside images that have no libc of their own
WAITER_SRCS := $(wildcard tools/waiter/*.c)
WAITER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(WAITER_SRCS))
# lantern-install, the DaemonSet's init container: libc only
INSTALL_SRCS := $(wildcard tools/lantern-install/*.c)
INSTALL_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(INSTALL_SRCS))

TEST_SRCS := $(wildcard tests/kselftest-style/*_test.c)
TEST_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(TEST_SRCS))
TEST_BINS := $(patsubst tests/kselftest-style/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_LIB  := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out $(TEST_SRCS),$(wildcard tests/kselftest-style/*.c)))
.SECONDARY: $(TEST_LIB)

HELPER_SRCS  := $(wildcard tests/kselftest-style/helpers/*.c)
HELPER_OBJS  := $(patsubst %.c,$(BUILD)/obj/%.o,$(HELPER_SRCS))
TEST_HELPERS := $(patsubst tests/kselftest-style/helpers/%.c,$(BUILD)/tests/%,$(HELPER_SRCS))

# one program per folder bench/NAME/, built from that folder's sources only
BENCH_NAMES := $(patsubst bench/%/,%,$(wildcard bench/*/))
BENCH_BINS  := $(patsubst %,$(BUILD)/bench/%,$(BENCH_NAMES))
bench_objs   = $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard bench/$(1)/*.c))
BENCH_OBJS  := $(foreach b,$(BENCH_NAMES),$(call bench_objs,$(b)))
# bench/journal's peer is SQLite (libsqlite3-dev)
BENCH_LDLIBS_journal := -lsqlite3

# Fuzzing (issue 13): one libFuzzer program per fuzz/NAME.c, built by clang with ASan and
# UBSan (every UB report is fatal) into build/fuzz/NAME. The modules they drive are
# compiled again with the same instrumentation into build/fuzz/obj and archived in
# build/fuzz/liblantern.a; fuzz/lib/ holds the targets' shared helpers and the in-memory
# gRPC transport (fake_rpc.c) that stands in for userspace/rpc. make check runs every
# target over its corpus (fuzz/corpus/NAME) for a fixed number of runs
# (build/tests/fuzz_test, from fuzz/check.sh); make fuzz runs each FUZZ_SECONDS.
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
                -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
                -Wno-missing-field-initializers -Iinclude -Ibpf -I$(BUILD) -I$(BUILD)/proto -Ifuzz/lib \
                -I/usr/include/postgresql
FUZZ_LDFLAGS := $(FUZZ_SAN) -fsanitize=fuzzer -Wl,--as-needed
FUZZ_SECONDS ?= 60
FUZZ_MODS    := util loop spec policy harness meter journal dns image tunnel wire jose
FUZZ_LIB_OBJS:= $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(wildcard $(patsubst %,userspace/%/*.c,$(FUZZ_MODS)))) \
                $(patsubst $(BUILD)/proto/%.c,$(BUILD)/fuzz/obj/proto/%.o,$(PROTO_GEN_C))
FUZZ_LIB     := $(BUILD)/fuzz/liblantern.a
FUZZ_HELPERS := $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(wildcard fuzz/lib/*.c))
FUZZ_COMMON  := $(BUILD)/fuzz/obj/fuzz/lib/fuzzlib.o
FUZZ_NAMES   := $(patsubst fuzz/%.c,%,$(wildcard fuzz/*.c))
FUZZ_BINS    := $(patsubst %,$(BUILD)/fuzz/%,$(FUZZ_NAMES))
FUZZ_OBJS    := $(patsubst %,$(BUILD)/fuzz/obj/fuzz/%.o,$(FUZZ_NAMES))
# lantern-cp's modules, without its main()
FUZZ_CP_OBJS := $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(filter-out %/main.c,$(CP_SRCS)))
FUZZ_RPC     := $(BUILD)/fuzz/obj/fuzz/lib/fake_rpc.o
# Each target links its own object, fuzzlib.o and the archive, plus FUZZ_EXTRA_NAME
# (objects) and FUZZ_LDLIBS_NAME (libraries).
FUZZ_LDLIBS_spec          := -lyaml -ljansson -lsodium
FUZZ_LDLIBS_dns_wire      :=
FUZZ_EXTRA_harness_state  := $(BUILD)/fuzz/obj/fuzz/lib/harness_eq.o
FUZZ_LDLIBS_harness_state := -ljansson -lsodium -lz -lcrypto -lpq
FUZZ_LDLIBS_record        := -ljansson -lsodium -lz -lcrypto -lpq
FUZZ_LDLIBS_wire          := -ljansson -lsodium -lz -lcrypto -lpq
FUZZ_LDLIBS_jose          := -ljansson -lsodium
FUZZ_LDLIBS_journal       := -ljansson -lsodium -lz -lcrypto -lpq
FUZZ_LDLIBS_tar           := -lsodium -lz
FUZZ_LDLIBS_image         := -ljansson -lsodium -lz
FUZZ_LDLIBS_harness_http  := -ljansson
FUZZ_LDLIBS_proto         := -lprotobuf-c
FUZZ_EXTRA_tunnel         := $(FUZZ_RPC)
FUZZ_LDLIBS_tunnel        := -ljansson -lsodium -lprotobuf-c -lpthread
FUZZ_CP_LDLIBS            := -lyaml -ljansson -lsodium -lprotobuf-c -lmicrohttpd -lsqlite3 -lpq -lpthread
FUZZ_EXTRA_cp_service     := $(FUZZ_CP_OBJS) $(FUZZ_RPC)
FUZZ_LDLIBS_cp_service    := $(FUZZ_CP_LDLIBS)
FUZZ_EXTRA_cp_http        := $(FUZZ_CP_OBJS) $(FUZZ_RPC)
FUZZ_LDLIBS_cp_http       := $(FUZZ_CP_LDLIBS)
FUZZ_EXTRA_cp_token       := $(FUZZ_CP_OBJS) $(FUZZ_RPC)
FUZZ_LDLIBS_cp_token      := $(FUZZ_CP_LDLIBS)

.PHONY: all deps host check test demo bench image fuzz fuzz-build clean
all: $(BUILD)/lanternd $(BUILD)/lantern $(BUILD)/lantern-shim $(BUILD)/lantern-wire $(BUILD)/lantern-oci $(BUILD)/lantern-cp \
     $(BUILD)/lantern-install $(BUILD)/lantern-waiter $(TEST_BINS) $(TEST_HELPERS) $(BENCH_BINS) $(BUILD)/tests/fuzz_test

deps: $(BUILD)/.deps-stamp host

$(BUILD)/.deps-stamp: scripts/deps.sh
	@bash scripts/deps.sh
	@mkdir -p $(@D) && touch $@

host:
	@bash scripts/host.sh

$(BUILD)/vmlinux.h:
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -I$(BUILD) -Ibpf $(DEPFLAGS) -c $< -o $@

$(SKELS): $(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/proto/.stamp: $(PROTO_SRCS)
	@mkdir -p $(BUILD)/proto/src/lantern/v1
	for f in $(PROTO_SRCS); do sed '/^service /,/^}/d' $$f > $(BUILD)/proto/src/$${f#proto/}; done
	protoc-c -I$(BUILD)/proto/src -I$(PROTO_INC) --c_out=$(BUILD)/proto \
		$(patsubst proto/%,$(BUILD)/proto/src/%,$(PROTO_SRCS)) google/protobuf/timestamp.proto
	touch $@

$(PROTO_GEN_C) $(PROTO_GEN_H): $(BUILD)/proto/.stamp

$(BUILD)/obj/proto/%.o: $(BUILD)/proto/%.c | $(PROTO_GEN_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

# Generated headers exist before anything that may include them is compiled; after the
# first compile the .d files name the ones each object really includes.
$(LIB_OBJS) $(D_OBJS) $(CLI_OBJS) $(CP_OBJS) $(WIRE_OBJS) $(TEST_OBJS) $(TEST_LIB) $(BENCH_OBJS): | $(PROTO_GEN_H)
$(TEST_OBJS) $(TEST_LIB) $(HELPER_OBJS): CFLAGS += -Itests/kselftest-style

$(BUILD)/proto/.otlp-stamp: $(OTLP_PROTOS)
	@mkdir -p $(BUILD)/proto
	protoc-c -Iproto --c_out=$(BUILD)/proto $(OTLP_PROTOS)
	touch $@

$(OTLP_GEN_C) $(OTLP_GEN_H): $(BUILD)/proto/.otlp-stamp

$(BUILD)/obj/otlp/%.o: $(BUILD)/proto/%.c | $(OTLP_GEN_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIB): $(OTLP_OBJS)

$(BUILD)/proto/.cri-stamp: $(CRI_PROTOS)
	@mkdir -p $(BUILD)/proto
	protoc-c -Iproto --c_out=$(BUILD)/proto $(CRI_PROTOS)
	touch $@

$(CRI_GEN_C) $(CRI_GEN_H): $(BUILD)/proto/.cri-stamp

$(BUILD)/obj/cri/%.o: $(BUILD)/proto/%.c | $(CRI_GEN_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIB): $(CRI_OBJS)
$(LIB_OBJS) $(D_OBJS) $(CLI_OBJS) $(TEST_OBJS) $(TEST_LIB) $(BENCH_OBJS): | $(CRI_GEN_H)
$(LIB_OBJS) $(D_OBJS) $(CLI_OBJS) $(TEST_OBJS) $(TEST_LIB) $(BENCH_OBJS): | $(OTLP_GEN_H)

# only the bpf module includes skeletons
$(filter $(BUILD)/obj/userspace/lbpf/%,$(LIB_OBJS)): | $(SKELS)

$(LIB): $(LIB_OBJS) $(PROTO_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/lanternd: $(D_OBJS) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(D_LDLIBS)

$(BUILD)/lantern: $(CLI_OBJS) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CLI_LDLIBS)

$(BUILD)/lantern-cp: $(CP_OBJS) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CP_LDLIBS)

$(BUILD)/lantern-wire: $(WIRE_OBJS) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(WIRE_LDLIBS)

$(BUILD)/lantern-shim: $(SHIM_OBJS) $(SHIM_MODS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^

$(BUILD)/lantern-oci: $(OCI_OBJS) $(SHIM_MODS)
	$(CC) $(CFLAGS) $(LDFLAGS) -static -o $@ $^ -ljansson

$(BUILD)/lantern-install: $(INSTALL_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^

$(BUILD)/lantern-waiter: $(WAITER_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -static -o $@ $^

# The DaemonSet's image holds these, the BPF objects, runc, runsc, the CNI plugins and
# exactly the shared libraries they load (scripts/mkimage-lanternd.sh).
IMAGE_BINS := $(BUILD)/lanternd $(BUILD)/lantern $(BUILD)/lantern-shim $(BUILD)/lantern-wire $(BUILD)/lantern-install \
              $(BUILD)/lantern-oci
image: $(IMAGE_BINS) $(BPF_OBJS)
	bash scripts/mkimage-lanternd.sh $(BUILD) $(BUILD)/image deploy/daemonset/kustomization.yaml

$(TEST_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/kselftest-style/%.o $(TEST_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(TEST_LDLIBS)

$(TEST_HELPERS): $(BUILD)/tests/%: $(BUILD)/obj/tests/kselftest-style/helpers/%.o
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^

$(foreach b,$(BENCH_NAMES),$(eval $(BUILD)/bench/$(b): $(call bench_objs,$(b)) $(LIB)))
$(BENCH_BINS):
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(BENCH_LDLIBS) $(BENCH_LDLIBS_$(@F))

check: deps
	$(MAKE) all fuzz-build
	bash tests/kselftest-style/run.sh $(BUILD)

test: all fuzz-build
	bash tests/kselftest-style/run.sh $(BUILD)

demo: deps
	$(MAKE) all
	bash scripts/demo.sh $(BUILD)

bench: deps
	$(MAKE) all
	bash bench/run.sh $(BUILD)

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/fuzz/obj/proto/%.o: $(BUILD)/proto/%.c | $(PROTO_GEN_H)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(FUZZ_LIB_OBJS) $(FUZZ_HELPERS) $(FUZZ_OBJS) $(FUZZ_CP_OBJS): | $(PROTO_GEN_H)
$(FUZZ_CP_OBJS): FUZZ_CFLAGS += -Itools/lantern-cp
$(FUZZ_OBJS): FUZZ_CFLAGS += -Itools/lantern-cp
# the record scanner's own header: the record target compares it with jansson
$(BUILD)/fuzz/obj/fuzz/record.o: FUZZ_CFLAGS += -Iuserspace/harness

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(foreach t,$(FUZZ_NAMES),$(eval $(BUILD)/fuzz/$(t): $(BUILD)/fuzz/obj/fuzz/$(t).o $(FUZZ_EXTRA_$(t)) $(FUZZ_COMMON) $(FUZZ_LIB)))
$(FUZZ_BINS):
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(FUZZ_LDLIBS_$(@F))

$(BUILD)/tests/fuzz_test: fuzz/check.sh
	@mkdir -p $(@D)
	install -m 0755 $< $@

fuzz-build: $(FUZZ_BINS)

fuzz: deps
	$(MAKE) fuzz-build
	bash fuzz/run.sh $(BUILD) $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)

-include $(patsubst %.o,%.d,$(BPF_OBJS) $(LIB_OBJS) $(PROTO_OBJS) $(OTLP_OBJS) $(CRI_OBJS) $(D_OBJS) \
	$(CLI_OBJS) $(CP_OBJS) $(WIRE_OBJS) $(SHIM_OBJS) $(OCI_OBJS) $(INSTALL_OBJS) $(TEST_OBJS) $(TEST_LIB) \
	$(HELPER_OBJS) $(BENCH_OBJS) $(FUZZ_LIB_OBJS) $(FUZZ_HELPERS) $(FUZZ_OBJS) $(FUZZ_CP_OBJS))
