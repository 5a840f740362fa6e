// rbac-check.js: is deploy/daemonset's ClusterRole exactly what lanternd uses? Reads the
// test API server's request log (JSON, GET /_test/log) and the RBAC manifest, maps each
// request to the verb and resource the real authorizer would check, and prints
//   {"denied": [requests no rule allows], "unused": [rule verbs no request needed]}
// so a test can assert that lanternd was never refused and holds no permission it
// does not use.
//   node rbac-check.js LOG.json deploy/daemonset/rbac.yaml ROLE_NAME
"use strict";

const fs = require("fs");
const YAML = require("yaml");

const [logFile, rbacFile, roleName] = process.argv.slice(2);
const log = JSON.parse(fs.readFileSync(logFile, "utf8"));
const role = YAML.parseAllDocuments(fs.readFileSync(rbacFile, "utf8")).map((d) => d.toJS())
  .find((o) => o && o.kind === "ClusterRole" && o.metadata.name === roleName);
if (!role) {
  console.log(JSON.stringify({ error: `no ClusterRole ${roleName} in ${rbacFile}` }));
  process.exit(1);
}

// What the authorizer sees: verb, API group, resource.
function attributes(e) {
  const p = e.path.split("/").filter(Boolean);
  if (p[0] !== "api" || p[1] !== "v1") return null;
  const named = p.length % 2 === 0;       // /api/v1/R/NAME or /api/v1/namespaces/NS/R/NAME
  const resource = p.length >= 5 ? p[4] : p[2];
  const verb = { POST: "create", PUT: "update", PATCH: "patch", DELETE: "delete" }[e.method] ||
    (e.query.watch === "true" || e.query.watch === "1" ? "watch" : named ? "get" : "list");
  return { verb, group: "", resource };
}

const used = new Set();
const denied = [];
for (const e of log) {
  const a = attributes(e);
  if (!a) continue;
  const ok = (role.rules || []).some((r) => (r.apiGroups || []).includes(a.group) &&
    (r.resources || []).includes(a.resource) && (r.verbs || []).includes(a.verb));
  if (ok) used.add(`${a.resource}:${a.verb}`);
  else denied.push(`${e.method} ${e.path} (${a.verb} ${a.resource})`);
}
const unused = [];
for (const r of role.rules || [])
  for (const res of r.resources || [])
    for (const v of r.verbs || [])
      if (!used.has(`${res}:${v}`)) unused.push(`${v} ${res}`);
console.log(JSON.stringify({ denied, unused }));
