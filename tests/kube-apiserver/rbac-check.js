// rbac-check.js: is deploy/daemonset's ClusterRole exactly what lanternd uses? Reads the
// test API server's request log (JSON, GET /_test/log) and the RBAC manifest, maps each
// request to the verb and resource the real authorizer would check, and prints
//   {"denied": [requests no rule allows], "unused": [rule verbs no request needed]}
// so a test can assert that lanternd was never refused and holds no permission it
// does not use.
// With a tenant grant (deploy/tenant/secrets-reader.yaml: a Role bound in each tenant
// namespace it is applied to), a request in a namespace in NAMESPACES (comma-separated)
// may also be allowed by that Role's rules; its unused verbs are reported too.
//   node rbac-check.js LOG.json deploy/daemonset/rbac.yaml ROLE_NAME [TENANT_FILE TENANT_ROLE NAMESPACES]
"use strict";

const fs = require("fs");
const YAML = require("yaml");

const [logFile, rbacFile, roleName, tenantFile, tenantRole, tenantNs] = process.argv.slice(2);
const log = JSON.parse(fs.readFileSync(logFile, "utf8"));
const roleIn = (file, kind, name) => YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => d.toJS())
  .find((o) => o && o.kind === kind && o.metadata.name === name);
const role = roleIn(rbacFile, "ClusterRole", roleName);
if (!role) {
  console.log(JSON.stringify({ error: `no ClusterRole ${roleName} in ${rbacFile}` }));
  process.exit(1);
}
const trole = tenantFile ? roleIn(tenantFile, "Role", tenantRole) : null;
if (tenantFile && !trole) {
  console.log(JSON.stringify({ error: `no Role ${tenantRole} in ${tenantFile}` }));
  process.exit(1);
}
const granted = new Set((tenantNs || "").split(",").filter(Boolean));

// What the authorizer sees: verb, API group, resource.
function attributes(e) {
  const p = e.path.split("/").filter(Boolean);
  if (p[0] !== "api" || p[1] !== "v1") return null;
  const named = p.length % 2 === 0;       // /api/v1/R/NAME or /api/v1/namespaces/NS/R/NAME
  const resource = p.length >= 5 ? p[4] : p[2];
  const verb = { POST: "create", PUT: "update", PATCH: "patch", DELETE: "delete" }[e.method] ||
    (e.query.watch === "true" || e.query.watch === "1" ? "watch" : named ? "get" : "list");
  return { verb, group: "", resource, ns: p[2] === "namespaces" && p.length >= 5 ? p[3] : null };
}

const allows = (rules, a) => (rules || []).some((r) => (r.apiGroups || []).includes(a.group) &&
  (r.resources || []).includes(a.resource) && (r.verbs || []).includes(a.verb));

const used = new Set(), tused = new Set();
const denied = [];
for (const e of log) {
  const a = attributes(e);
  if (!a) continue;
  if (allows(role.rules, a)) used.add(`${a.resource}:${a.verb}`);
  else if (trole && a.ns && granted.has(a.ns) && allows(trole.rules, a)) tused.add(`${a.resource}:${a.verb}`);
  else denied.push(`${e.method} ${e.path} (${a.verb} ${a.resource})`);
}
const unused = [];
for (const [r0, u, what] of [[role, used, ""], [trole, tused, `Role ${tenantRole}: `]])
  for (const r of (r0 && r0.rules) || [])
    for (const res of r.resources || [])
      for (const v of r.verbs || [])
        if (!u.has(`${res}:${v}`)) unused.push(`${what}${v} ${res}`);
console.log(JSON.stringify({ denied, unused }));
