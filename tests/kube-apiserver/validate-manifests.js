// validate-manifests.js: checks deploy/daemonset before anyone applies it: every object
// against the official Kubernetes schemas (kubernetes-models, strictly: schema.js), and
// the properties the node agent depends on (a privileged host-namespaced DaemonSet with
// the mounts, probes, priority, tolerations and rollout lanternd needs; least RBAC,
// each rule explained; RuntimeClasses that fail closed; the Secret and ConfigMap it
// reads; an image pinned by digest). Prints one JSON array of
//   {"name": what is checked, "ok": true|false, "detail": why not}
// for manifests_test to report as TAP. TENANT_FILE is the per-tenant-namespace grant
// (deploy/tenant/secrets-reader.yaml): exactly get on secrets, namespaced, to lanternd.
//   node validate-manifests.js DIR LANTERND_HELP_FILE [TENANT_FILE]
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");
const { validate } = require("./schema");

const [dir, helpFile, tenantFile] = process.argv.slice(2);
const results = [];
const check = (name, ok, detail) => results.push({ name, ok: !!ok, detail: ok ? "" : detail || "" });

const kust = YAML.parse(fs.readFileSync(path.join(dir, "kustomization.yaml"), "utf8"));
const docs = [];        // {file, obj, node}
for (const f of kust.resources || []) {
  for (const d of YAML.parseAllDocuments(fs.readFileSync(path.join(dir, f), "utf8")))
    if (d.contents) docs.push({ file: f, obj: d.toJS(), doc: d });
}
const find = (kind, name) => docs.find((d) => d.obj.kind === kind && (!name || d.obj.metadata.name === name));

// ---- every object, by the schema ----
const yamls = fs.readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort();
check("kustomization.yaml lists every manifest of the directory, and only existing ones",
  JSON.stringify(yamls) === JSON.stringify([...(kust.resources || [])].sort()),
  `files ${yamls.join(",")} vs resources ${(kust.resources || []).join(",")}`);
for (const d of docs) {
  const errs = validate(d.obj);
  check(`${d.file}: ${d.obj.kind} ${d.obj.metadata && d.obj.metadata.name} passes the official schema (strict)`,
    errs.length === 0, errs.join("; "));
}

// ---- the image, by digest ----
const ds = find("DaemonSet", "lanternd");
const dsObj = ds ? ds.obj : { spec: { template: { spec: { containers: [], initContainers: [] } } } };
const pod = dsObj.spec.template.spec;
const all = [...(pod.initContainers || []), ...(pod.containers || [])];
const img = (kust.images || [])[0] || {};
check("the image is pinned by digest (kustomization images: digest sha256:<64 hex>) and every container names it without a tag",
  /^sha256:[0-9a-f]{64}$/.test(img.digest || "") && all.length > 0 && all.every((c) => c.image === img.name),
  `images ${JSON.stringify(kust.images)}; containers use ${all.map((c) => c.image).join(", ")}`);

// ---- the DaemonSet ----
const lanternd = (pod.containers || []).find((c) => c.name === "lanternd") || { args: [], volumeMounts: [] };
const vol = (name) => (pod.volumes || []).find((v) => v.name === name) || {};
const mountOf = (p) => (lanternd.volumeMounts || []).find((m) => m.mountPath === p);
const hostPathOf = (m) => m && (vol(m.name).hostPath || {}).path;
check("DaemonSet: privileged, hostPID, hostNetwork (the DNS proxy listens at the node's address), ClusterFirstWithHostNet",
  lanternd.securityContext && lanternd.securityContext.privileged === true && pod.hostPID === true &&
  pod.hostNetwork === true && pod.dnsPolicy === "ClusterFirstWithHostNet");
const bpf = mountOf("/sys/fs/bpf");
check("DaemonSet: the host's /sys/fs/bpf with Bidirectional mount propagation (pins outlive the pod)",
  bpf && hostPathOf(bpf) === "/sys/fs/bpf" && bpf.mountPropagation === "Bidirectional");
check("DaemonSet: the host's /sys/fs/cgroup and /sys/kernel/tracing, /sys/kernel/btf read-only",
  hostPathOf(mountOf("/sys/fs/cgroup")) === "/sys/fs/cgroup" &&
  hostPathOf(mountOf("/sys/kernel/tracing")) === "/sys/kernel/tracing" &&
  hostPathOf(mountOf("/sys/kernel/btf")) === "/sys/kernel/btf" && mountOf("/sys/kernel/btf").readOnly === true);
check("DaemonSet: /var/lib/lantern (state) and /run/lantern (the socket lantern-oci dials) from the host",
  hostPathOf(mountOf("/var/lib/lantern")) === "/var/lib/lantern" && hostPathOf(mountOf("/run/lantern")) === "/run/lantern");
check("DaemonSet: no container runtime socket in lanternd (under --kubernetes the kubelet starts containers, never lanternd)",
  !(lanternd.volumeMounts || []).some((m) => /containerd|crio|docker/.test(hostPathOf(m) || "")));
const env = (n) => (lanternd.env || []).find((e) => e.name === n);
check("DaemonSet: NODE_NAME from the downward API (spec.nodeName), passed as --node-name",
  env("NODE_NAME") && env("NODE_NAME").valueFrom.fieldRef.fieldPath === "spec.nodeName" &&
  (lanternd.args || []).includes("--node-name=$(NODE_NAME)") && (lanternd.args || []).includes("--kubernetes"));
const metricsArg = (lanternd.args || []).find((a) => a.startsWith("--metrics-addr="));
const metricsPort = metricsArg ? Number(metricsArg.split(":").pop()) : -1;
const probe = (p) => p && p.httpGet;
check("DaemonSet: liveness GET /healthz and readiness GET /readyz on lanternd's metrics address",
  probe(lanternd.livenessProbe) && lanternd.livenessProbe.httpGet.path === "/healthz" &&
  lanternd.livenessProbe.httpGet.port === metricsPort && probe(lanternd.readinessProbe) &&
  lanternd.readinessProbe.httpGet.path === "/readyz" && lanternd.readinessProbe.httpGet.port === metricsPort &&
  `${lanternd.livenessProbe.httpGet.host}:${metricsPort}` === metricsArg.split("=")[1],
  `--metrics-addr ${metricsArg}`);
check("DaemonSet: priorityClassName system-node-critical, tolerates every taint",
  pod.priorityClassName === "system-node-critical" && (pod.tolerations || []).some((t) => t.operator === "Exists" && !t.key));
const ru = (dsObj.spec.updateStrategy || {});
check("DaemonSet: RollingUpdate one node at a time, never two lanternds on a node (maxSurge 0)",
  ru.type === "RollingUpdate" && ru.rollingUpdate && ru.rollingUpdate.maxUnavailable === 1 && ru.rollingUpdate.maxSurge === 0);
const init = (pod.initContainers || [])[0] || { volumeMounts: [] };
const initHost = (init.volumeMounts || []).map((m) => (vol(m.name).hostPath || {}).path);
check("DaemonSet: an init container installs lantern-oci and containerd's drop-in on the host",
  (init.command || []).some((c) => /lantern-install/.test(c)) && initHost.includes("/opt/lantern/bin") &&
  initHost.includes("/etc/containerd/conf.d"));
check("DaemonSet: runs as the lanternd ServiceAccount", pod.serviceAccountName === "lanternd" && find("ServiceAccount", "lanternd"));

// ---- flags: every one is lanternd's ----
const help = fs.readFileSync(helpFile, "utf8");
const known = new Set([...help.matchAll(/--([a-z0-9-]+)/g)].map((m) => m[1]));
const cm = find("ConfigMap", "lanternd-config");
const cmData = cm ? cm.obj.data || {} : {};
const flagsFile = ((lanternd.args || []).find((a) => a.startsWith("--flags-file=")) || "").split("=")[1] || "";
const cmMount = (lanternd.volumeMounts || []).find((m) => vol(m.name).configMap);
const fileKey = cmMount && flagsFile.startsWith(cmMount.mountPath + "/") ? flagsFile.slice(cmMount.mountPath.length + 1) : "";
const fileFlags = (cmData[fileKey] || "").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))
  .map((l) => l.split(/[ =]/)[0]);
const used = [...(lanternd.args || []).map((a) => a.split("=")[0]), ...fileFlags];
const unknown = used.filter((f) => !known.has(f.replace(/^--/, "")));
check("the ConfigMap holds the --flags-file lanternd is given, and every flag there and in args is one lanternd has",
  fileKey && cmData[fileKey] !== undefined && unknown.length === 0, `unknown: ${unknown.join(", ")}; flags file key "${fileKey}"`);
const referenced = fileFlags.length ? (cmData[fileKey] || "").split("\n").map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#")).map((l) => l.split(/[ =]+/)[1]).filter((v) => v && v.startsWith("/etc/lantern/")) : [];
const missingFiles = referenced.filter((p) => {
  const rel = p.slice(cmMount.mountPath.length + 1);
  return cmData[rel] === undefined;
});
check("every /etc/lantern file the flags name is a key of the ConfigMap", missingFiles.length === 0, missingFiles.join(", "));
let tenantErrs = [];
try {
  JSON.parse(cmData["prices.json"]);
  const t = JSON.parse(cmData["tenant-namespace.json"]);
  tenantErrs = [
    ...validate({ apiVersion: "v1", kind: "Namespace", metadata: { name: "lantern-t-x", labels: t.labels } }),
    ...validate({ apiVersion: "v1", kind: "ResourceQuota", metadata: { name: "lantern" }, spec: t.resourceQuota }),
    ...validate({ apiVersion: "v1", kind: "LimitRange", metadata: { name: "lantern" }, spec: t.limitRange }),
  ];
} catch (e) {
  tenantErrs = [e.message];
}
check("ConfigMap: prices.json is JSON; tenant-namespace.json's labels, ResourceQuota and LimitRange pass the schema",
  tenantErrs.length === 0, tenantErrs.join("; "));
const sec = find("Secret", "lanternd-bootstrap");
const secMount = (lanternd.volumeMounts || []).find((m) => (vol(m.name).secret || {}).secretName === "lanternd-bootstrap");
check("Secret lanternd-bootstrap (bootstrap-token) is mounted read-only into lanternd",
  sec && "bootstrap-token" in (sec.obj.stringData || sec.obj.data || {}) && secMount && secMount.readOnly === true);

// ---- RBAC ----
const role = find("ClusterRole", "lanternd");
const rules = role ? role.obj.rules || [] : [];
const ruleSeq = role ? role.doc.get("rules") : null;
// the first rule's comment is the sequence's own (the parser gives it there)
const ruleComments = ruleSeq ? ruleSeq.items.map((n, i) => n.commentBefore || (i === 0 ? ruleSeq.commentBefore : "") || "") : [];
check("ClusterRole lanternd: every rule carries a comment saying why",
  rules.length > 0 && ruleComments.every((c) => c.trim().length > 20));
check("ClusterRole lanternd: no wildcard, no secrets/configmaps/serviceaccounts, no escalate/bind/impersonate",
  rules.every((r) => ![...(r.verbs || []), ...(r.resources || []), ...(r.apiGroups || [])].includes("*") &&
    !(r.resources || []).some((x) => ["secrets", "configmaps", "serviceaccounts"].includes(x)) &&
    !(r.verbs || []).some((v) => ["escalate", "bind", "impersonate"].includes(v))));
const binding = find("ClusterRoleBinding", "lanternd");
check("ClusterRoleBinding binds that role to ServiceAccount lantern-system/lanternd only",
  binding && binding.obj.roleRef.name === "lanternd" && binding.obj.subjects.length === 1 &&
  binding.obj.subjects[0].kind === "ServiceAccount" && binding.obj.subjects[0].name === "lanternd" &&
  binding.obj.subjects[0].namespace === "lantern-system");

// ---- the per-tenant grant of k8s:// secrets ----
if (tenantFile) {
  const tdocs = YAML.parseAllDocuments(fs.readFileSync(tenantFile, "utf8")).filter((d) => d.contents).map((d) => d.toJS());
  const terrs = tdocs.flatMap((o) => validate(o).map((e) => `${o.kind}: ${e}`));
  const trole = tdocs.find((o) => o.kind === "Role" && o.metadata.name === "lantern-secrets-reader");
  const tbind = tdocs.find((o) => o.kind === "RoleBinding" && o.metadata.name === "lantern-secrets-reader");
  const trules = trole ? trole.rules || [] : [];
  check(`${path.basename(tenantFile)}: Role and RoleBinding lantern-secrets-reader pass the official schema (strict), nothing else in it`,
    terrs.length === 0 && trole && tbind && tdocs.length === 2, terrs.join("; ") || `kinds ${tdocs.map((o) => o.kind).join(",")}`);
  check(`${path.basename(tenantFile)}: namespaced only (a Role, no namespace fixed: applied per tenant namespace), never a ClusterRole or ClusterRoleBinding`,
    trole && tbind && !tdocs.some((o) => /^Cluster/.test(o.kind)) && !trole.metadata.namespace && !tbind.metadata.namespace);
  check(`${path.basename(tenantFile)}: Role lantern-secrets-reader grants exactly get on secrets (core group): no list, no watch, nothing else`,
    trules.length === 1 && JSON.stringify(trules[0].apiGroups) === JSON.stringify([""]) &&
    JSON.stringify(trules[0].resources) === JSON.stringify(["secrets"]) &&
    JSON.stringify(trules[0].verbs) === JSON.stringify(["get"]),
    JSON.stringify(trules));
  check(`${path.basename(tenantFile)}: RoleBinding binds that Role (kind Role) to ServiceAccount lantern-system/lanternd only`,
    tbind && tbind.roleRef.kind === "Role" && tbind.roleRef.name === "lantern-secrets-reader" &&
    tbind.subjects.length === 1 && tbind.subjects[0].kind === "ServiceAccount" &&
    tbind.subjects[0].name === "lanternd" && tbind.subjects[0].namespace === "lantern-system");
}

// ---- RuntimeClasses ----
const classes = ["trusted", "standard", "untrusted", "hostile"];
const rcs = docs.filter((d) => d.obj.kind === "RuntimeClass").map((d) => d.obj);
check("RuntimeClasses lantern-trusted|standard|untrusted|hostile, each with handler lantern-<class>, " +
  "scheduling.nodeSelector lantern.dev/class-<class>=true and a cpu and memory overhead",
  rcs.length === classes.length && classes.every((c) => {
    const rc = rcs.find((x) => x.metadata.name === `lantern-${c}`);
    return rc && rc.handler === `lantern-${c}` && rc.scheduling && rc.scheduling.nodeSelector &&
      rc.scheduling.nodeSelector[`lantern.dev/class-${c}`] === "true" &&
      Object.keys(rc.scheduling.nodeSelector).length === 1 && rc.overhead && rc.overhead.podFixed &&
      rc.overhead.podFixed.cpu && rc.overhead.podFixed.memory;
  }));
const ns = find("Namespace", "lantern-system");
check("Namespace lantern-system admits the privileged agent (pod-security enforce privileged) and holds every namespaced object",
  ns && ns.obj.metadata.labels["pod-security.kubernetes.io/enforce"] === "privileged" &&
  docs.filter((d) => !["Namespace", "ClusterRole", "ClusterRoleBinding", "RuntimeClass"].includes(d.obj.kind))
    .every((d) => d.obj.metadata.namespace === "lantern-system"));

process.stdout.write(JSON.stringify(results) + "\n");
