/* image.c: `lantern image import|ls|rm` (the node's image store, kept by lanternd)
 * and `lantern node` (the isolation classes and runtime handlers it advertises). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"

static void print_images(json_t *res, const char *verb)
{
	json_t *x;
	size_t i;

	json_array_foreach(json_object_get(res, "images"), i, x)
		printf("%s %s@%s\n", verb, json_string_value(json_object_get(x, "name")),
		       json_string_value(json_object_get(x, "digest")));
}

static int image_ls(struct cli *c)
{
	json_t *req = json_pack("{s:s}", "op", "image_ls"), *res, *x;
	size_t i;

	res = client_call(c, req);
	json_decref(req);
	if (!res)
		return 1;
	printf("%-28s %-71s %10s %s\n", "NAME", "DIGEST", "SIZE", "UNPACKED");
	json_array_foreach(json_object_get(res, "images"), i, x) {
		printf("%-28s %-71s %10lld %s\n", json_string_value(json_object_get(x, "name")),
		       json_string_value(json_object_get(x, "digest")),
		       (long long)json_integer_value(json_object_get(x, "size")),
		       json_is_true(json_object_get(x, "unpacked")) ? "yes" : "no");
	}
	json_decref(res);
	return 0;
}

int cmd_image(struct cli *c, int argc, char **argv)
{
	json_t *req, *res;
	char abs[PATH_MAX];

	if (argc == 2 && !strcmp(argv[1], "ls"))
		return image_ls(c);
	if (argc == 3 && !strcmp(argv[1], "import")) {
		/* lanternd reads the path itself, from its own working directory */
		if (!realpath(argv[2], abs)) {
			perror(argv[2]);
			return 1;
		}
		req = json_pack("{s:s, s:s}", "op", "image_import", "path", abs);
	} else if (argc == 3 && !strcmp(argv[1], "rm")) {
		req = json_pack("{s:s, s:s}", "op", "image_rm", "ref", argv[2]);
	} else {
		fprintf(stderr, "usage: lantern image import PATH | ls | rm NAME@sha256:HEX|sha256:HEX|NAME\n");
		return 2;
	}
	res = client_call(c, req);
	json_decref(req);
	if (!res)
		return 1;
	print_images(res, !strcmp(argv[1], "rm") ? "removed" : "imported");
	json_decref(res);
	return 0;
}

int cmd_node(struct cli *c, int argc, char **argv)
{
	json_t *req = json_pack("{s:s}", "op", "node"), *res, *x, *net;
	size_t i;

	if (argc >= 2 && !strcmp(argv[1], "containerd-config")) {
		json_decref(req);
		return cmd_node_containerd(argc - 1, argv + 1);
	}
	if (argc == 2 && !strcmp(argv[1], "--json")) {
		res = client_call(c, req);
		json_decref(req);
		if (!res)
			return 1;
		json_dumpf(res, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("\n");
		json_decref(res);
		return 0;
	}
	res = client_call(c, req);
	json_decref(req);
	if (!res)
		return 1;
	net = json_object_get(res, "network");
	printf("cgroups %s; process runtime %s; spawn network: bridge %s, %s%s\n\n",
	       json_string_value(json_object_get(res, "cgroup_layout")),
	       json_is_true(json_object_get(res, "process_runtime")) ? "on" : "off",
	       json_string_value(json_object_get(net, "bridge")), json_string_value(json_object_get(net, "subnet")),
	       json_is_true(json_object_get(net, "default_route")) ? ", default route + NAT" : ", subnet only");
	printf("%-13s %-8s %-11s %s\n", "CLASS", "HANDLER", "ADVERTISED", "NOTE");
	json_array_foreach(json_object_get(res, "classes"), i, x) {
		const char *h = json_string_value(json_object_get(x, "handler"));
		const char *why = json_string_value(json_object_get(x, "reason"));
		const char *ver = "";
		json_t *hx;
		size_t k;

		json_array_foreach(json_object_get(res, "handlers"), k, hx)
			if (h && !strcmp(h, json_string_value(json_object_get(hx, "name"))))
				ver = json_string_value(json_object_get(hx, "version")) ?: "";
		printf("%-13s %-8s %-11s %s\n", json_string_value(json_object_get(x, "class")), h ? h : "-",
		       json_is_true(json_object_get(x, "advertised")) ? "yes" : "no", why ? why : ver);
	}
	json_decref(res);
	return 0;
}
