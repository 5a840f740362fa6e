// server.js: a test-only Kubernetes API server for lanternd --kubernetes. No
// kube-apiserver can run on the test machines, so this implements the few endpoints
// lanternd uses, the way the real one answers them, over TLS on loopback with a bearer
// token or a client certificate:
//   namespaces (create, get), resourcequotas and limitranges (create), pods (create,
//   get, delete; list and watch across namespaces with label and field selectors,
//   resourceVersion, bookmarks, 410 Gone after compaction), nodes (get, merge patch),
//   secrets (get by name in a namespace; only the test creates them).
// Every object lanternd sends is validated against the official schemas
// (kubernetes-models, schema.js) and refused with 422 when invalid, as the API server
// does with fieldValidation=Strict. Pod admission applies the RuntimeClass objects of
// deploy/daemonset (their nodeSelector and overhead), and a small kubelet refuses a
// pod whose nodeSelector its node does not match (NodeAffinity), as a real kubelet
// does. Everything else a kubelet does, the test drives through /_test/ endpoints:
//   GET  /_test/log                     every request: method, path, query, status, errors
//   GET  /_test/objects                 what the server stores
//   POST /_test/pods/NS/NAME/status     merge into the pod's status (the kubelet reports)
//   POST /_test/pods/NS/NAME/delete     delete it (someone else deletes it)
//   POST /_test/pods                    create a pod as another client would
//   POST /_test/expire                  compact history: open watches get 410 Gone;
//                                       body {pods:[{namespace,name,status}]} changes
//                                       them first, silently (only a relist sees it)
//   POST /_test/end-watches             end every watch as its timeout would
//   POST /_test/nodes/NAME/labels       merge into the node's labels (null removes)
//   POST /_test/namespaces/NAME/delete  delete an (empty) namespace with its quota and limits
//   POST /_test/secrets                 create or replace (rotate) a Secret (validated)
//   POST /_test/secrets/NS/NAME/delete  delete it
//   POST /_test/faults                  body {secrets: {delayMs, code}}: GETs of secrets
//                                       answer after delayMs, and with code (403: the
//                                       authorizer's Forbidden) when set; {} clears
//
//   node server.js --cert F --key F --ca F --token T --node NAME[,NAME] --runtimeclasses F
//                  [--bookmark-ms N]
// Prints "ready PORT" once it listens on 127.0.0.1.
"use strict";

const fs = require("fs");
const https = require("https");
const crypto = require("crypto");
const YAML = require("yaml");
const { validate } = require("./schema");

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];

let rv = 1;                  // the last resourceVersion handed out
let compacted = 0;           // watches from before this get 410
const history = [];          // pod events {rv, type, obj}
const store = { namespaces: new Map(), resourcequotas: new Map(), limitranges: new Map(), pods: new Map(), nodes: new Map(), secrets: new Map() };
let faults = {};
const runtimeClasses = new Map();
const watches = new Set();
const log = [];

for (const doc of YAML.parseAllDocuments(fs.readFileSync(args.runtimeclasses, "utf8"))) {
  const o = doc.toJS();
  if (o && o.kind === "RuntimeClass") runtimeClasses.set(o.metadata.name, o);
}
for (const name of (args.node || "").split(",").filter(Boolean))
  store.nodes.set(name, { apiVersion: "v1", kind: "Node", metadata: { name, uid: crypto.randomUUID(), resourceVersion: String(++rv), labels: { "kubernetes.io/hostname": name } }, status: { phase: "Running" } });

const clone = (o) => JSON.parse(JSON.stringify(o));
const now = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");

function status(code, reason, message, details) {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code, ...(details ? { details } : {}) };
}

function reply(res, code, body) {
  const s = JSON.stringify(body);
  res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(s) });
  res.end(s);
  return code;
}

function selects(pod, q) {
  const ls = q.get("labelSelector"), fs_ = q.get("fieldSelector");
  for (const term of (ls || "").split(",").filter(Boolean)) {
    const [k, v] = term.split("=");
    if (((pod.metadata.labels || {})[k]) !== v) return false;
  }
  for (const term of (fs_ || "").split(",").filter(Boolean)) {
    const [k, v] = term.split("=");
    if (k === "spec.nodeName" && (pod.spec.nodeName || "") !== v) return false;
    if (k === "metadata.namespace" && pod.metadata.namespace !== v) return false;
  }
  return true;
}

function podEvent(type, pod) {
  const ev = { rv: Number(pod.metadata.resourceVersion), type, obj: clone(pod) };
  history.push(ev);
  for (const w of watches) if (!w.paused && selects(ev.obj, w.q)) w.send({ type, object: ev.obj });
}

function bump(obj) {
  obj.metadata.resourceVersion = String(++rv);
}

// The kubelet's admission of a pod bound to its node: the node's labels must match
// the pod's nodeSelector (RuntimeClass scheduling put the class's label there).
function kubeletAdmit(key) {
  const pod = store.pods.get(key);
  const node = pod && store.nodes.get(pod.spec.nodeName);
  if (!pod || !node || pod.status.phase !== "Pending") return;
  for (const [k, v] of Object.entries(pod.spec.nodeSelector || {})) {
    if ((node.metadata.labels || {})[k] !== v) {
      pod.status = { ...pod.status, phase: "Failed", reason: "NodeAffinity", message: "Pod was rejected: Predicate NodeAffinity failed" };
      bump(pod);
      podEvent("MODIFIED", pod);
      return;
    }
  }
}

function createPod(ns, pod) {
  const key = `${ns}/${pod.metadata.name}`;
  if (!store.namespaces.has(ns)) return [404, status(404, "NotFound", `namespaces "${ns}" not found`, { name: ns, kind: "namespaces" })];
  if (store.pods.has(key)) return [409, status(409, "AlreadyExists", `pods "${pod.metadata.name}" already exists`, { name: pod.metadata.name, kind: "pods" })];
  if (pod.spec.runtimeClassName) {
    const rc = runtimeClasses.get(pod.spec.runtimeClassName);
    if (!rc) return [403, status(403, "Forbidden", `pod rejected: RuntimeClass "${pod.spec.runtimeClassName}" not found`)];
    const sel = ((rc.scheduling || {}).nodeSelector) || {};
    for (const [k, v] of Object.entries(sel)) {
      if (pod.spec.nodeSelector && k in pod.spec.nodeSelector && pod.spec.nodeSelector[k] !== v)
        return [403, status(403, "Forbidden", `pod rejected: conflict with RuntimeClass nodeSelector: ${k}`)];
    }
    if (Object.keys(sel).length) pod.spec.nodeSelector = { ...(pod.spec.nodeSelector || {}), ...sel };
    if (rc.overhead && rc.overhead.podFixed) {
      if (pod.spec.overhead) return [403, status(403, "Forbidden", "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead")];
      pod.spec.overhead = rc.overhead.podFixed;
    }
  }
  pod.metadata.namespace = ns;
  pod.metadata.uid = crypto.randomUUID();
  pod.metadata.creationTimestamp = now();
  pod.status = { phase: "Pending", qosClass: "Guaranteed" };
  bump(pod);
  store.pods.set(key, pod);
  podEvent("ADDED", pod);
  setTimeout(() => kubeletAdmit(key), 20);
  return [201, pod];
}

function deletePod(key) {
  const pod = store.pods.get(key);
  if (!pod) return null;
  store.pods.delete(key);
  pod.metadata.deletionTimestamp = now();
  pod.metadata.deletionGracePeriodSeconds = 0;
  bump(pod);
  podEvent("DELETED", pod);
  return pod;
}

function mergePatch(target, patch) {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return clone(patch);
  const out = target && typeof target === "object" && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function watch(req, res, q) {
  const from = Number(q.get("resourceVersion") || 0);
  const w = { q, paused: false };
  res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" });
  w.send = (ev) => res.write(JSON.stringify(ev) + "\n");
  w.end = () => {
    watches.delete(w);
    clearInterval(w.bookmarks);
    clearTimeout(w.timeout);
    res.end();
  };
  if (from && from < compacted) {
    w.send({ type: "ERROR", object: status(410, "Expired", `too old resource version: ${from} (${compacted})`) });
    res.end();
    return;
  }
  for (const ev of history) if (ev.rv > from && selects(ev.obj, q)) w.send({ type: ev.type, object: ev.obj });
  watches.add(w);
  if (q.get("allowWatchBookmarks") === "true")
    w.bookmarks = setInterval(() => {
      if (!w.paused) w.send({ type: "BOOKMARK", object: { kind: "Pod", apiVersion: "v1", metadata: { resourceVersion: String(rv) } } });
    }, Number(args["bookmark-ms"] || 1000));
  w.timeout = setTimeout(w.end, Number(q.get("timeoutSeconds") || 1800) * 1000);
  res.on("close", () => {
    watches.delete(w);
    clearInterval(w.bookmarks);
    clearTimeout(w.timeout);
  });
}

function podList(q) {
  const items = [...store.pods.values()].filter((p) => selects(p, q)).map(clone);
  return { kind: "PodList", apiVersion: "v1", metadata: { resourceVersion: String(rv) }, items };
}

// An object for the store: valid, and of the kind this endpoint takes.
function admit(entry, body, kind, ns) {
  entry.kind = kind;
  if (!body || body.kind !== kind || body.apiVersion !== "v1") {
    entry.errors = [`want apiVersion v1 kind ${kind}, got ${body && body.apiVersion} ${body && body.kind}`];
  } else {
    entry.errors = validate(body);
    if (ns && body.metadata && body.metadata.namespace && body.metadata.namespace !== ns)
      entry.errors.push(`metadata.namespace "${body.metadata.namespace}" does not match the request's namespace "${ns}"`);
  }
  entry.valid = entry.errors.length === 0;
  return entry.valid ? null : status(422, "Invalid", `${kind} is invalid: ${entry.errors.join("; ")}`);
}

function route(req, res, body, entry) {
  const url = new URL(req.url, "https://x");
  const q = url.searchParams;
  const p = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const m = req.method;
  let bad;

  // ---- the test's hand on the kubelet ----
  if (p[0] === "_test") {
    if (m === "GET" && p[1] === "log") return reply(res, 200, log);
    if (m === "GET" && p[1] === "objects") {
      const o = { resourceVersion: String(rv) };
      for (const [k, v] of Object.entries(store)) o[k] = [...v.values()];
      return reply(res, 200, o);
    }
    if (m === "POST" && p[1] === "pods" && p.length === 5) {
      const key = `${p[2]}/${p[3]}`, pod = store.pods.get(key);
      if (!pod) return reply(res, 404, status(404, "NotFound", `pods "${p[3]}" not found`));
      if (p[4] === "delete") return reply(res, 200, deletePod(key));
      pod.status = { ...pod.status, ...body };
      bump(pod);
      podEvent("MODIFIED", pod);
      return reply(res, 200, pod);
    }
    if (m === "POST" && p[1] === "pods" && p.length === 2) {
      const [code, out] = createPod(body.metadata.namespace, body);
      return reply(res, code, out);
    }
    if (m === "POST" && p[1] === "expire") {
      for (const w of watches) w.paused = true;
      for (const c of (body && body.pods) || []) {
        const pod = store.pods.get(`${c.namespace}/${c.name}`);
        if (!pod) continue;
        pod.status = { ...pod.status, ...c.status };
        bump(pod);
        podEvent("MODIFIED", pod);
      }
      compacted = ++rv;
      for (const w of [...watches]) {
        w.paused = false;
        w.send({ type: "ERROR", object: status(410, "Expired", `too old resource version (compacted at ${compacted})`) });
        w.end();
      }
      return reply(res, 200, { compacted });
    }
    if (m === "POST" && p[1] === "nodes" && p[3] === "labels") {
      const node = store.nodes.get(p[2]);
      if (!node) return reply(res, 404, status(404, "NotFound", `nodes "${p[2]}" not found`));
      node.metadata = mergePatch(node.metadata, { labels: body });
      bump(node);
      return reply(res, 200, node);
    }
    if (m === "POST" && p[1] === "namespaces" && p[3] === "delete") {
      if ([...store.pods.keys()].some((k) => k.startsWith(`${p[2]}/`)))
        return reply(res, 409, status(409, "Conflict", `namespace ${p[2]} still has pods`));
      for (const r of ["resourcequotas", "limitranges"])
        for (const k of [...store[r].keys()]) if (k.startsWith(`${p[2]}/`)) store[r].delete(k);
      return reply(res, store.namespaces.delete(p[2]) ? 200 : 404, {});
    }
    if (m === "POST" && p[1] === "secrets" && p.length === 2) {
      if ((bad = admit(entry, body, "Secret", body && body.metadata && body.metadata.namespace))) return reply(res, 422, bad);
      const key = `${body.metadata.namespace}/${body.metadata.name}`;
      body.metadata.uid = (store.secrets.get(key) || { metadata: {} }).metadata.uid || crypto.randomUUID();
      bump(body);
      store.secrets.set(key, body);
      return reply(res, 200, { resourceVersion: body.metadata.resourceVersion });
    }
    if (m === "POST" && p[1] === "secrets" && p.length === 5 && p[4] === "delete")
      return reply(res, store.secrets.delete(`${p[2]}/${p[3]}`) ? 200 : 404, {});
    if (m === "POST" && p[1] === "faults") {
      faults = body || {};
      return reply(res, 200, faults);
    }
    if (m === "POST" && p[1] === "end-watches") {
      const n = watches.size;
      for (const w of [...watches]) w.end();
      return reply(res, 200, { ended: n });
    }
    return reply(res, 404, status(404, "NotFound", "no such test endpoint"));
  }

  // ---- the API ----
  if (p[0] !== "api" || p[1] !== "v1") return reply(res, 404, status(404, "NotFound", "the server could not find the requested resource"));
  // /api/v1/pods (every namespace)
  if (p.length === 3 && p[2] === "pods" && m === "GET")
    return q.get("watch") === "true" || q.get("watch") === "1" ? (watch(req, res, q), 200) : reply(res, 200, podList(q));
  if (p[2] === "nodes" && p.length === 4) {
    const node = store.nodes.get(p[3]);
    if (!node) return reply(res, 404, status(404, "NotFound", `nodes "${p[3]}" not found`, { name: p[3], kind: "nodes" }));
    if (m === "GET") return reply(res, 200, node);
    if (m === "PATCH") {
      entry.kind = "Node";
      if (req.headers["content-type"] !== "application/merge-patch+json")
        return reply(res, 415, status(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json`));
      const patched = mergePatch(node, body);
      entry.errors = validate(patched);
      entry.valid = entry.errors.length === 0;
      if (!entry.valid) return reply(res, 422, status(422, "Invalid", `Node is invalid: ${entry.errors.join("; ")}`));
      bump(patched);
      store.nodes.set(p[3], patched);
      return reply(res, 200, patched);
    }
  }
  if (p[2] === "namespaces" && p.length === 3 && m === "POST") {
    if ((bad = admit(entry, body, "Namespace"))) return reply(res, 422, bad);
    if (store.namespaces.has(body.metadata.name))
      return reply(res, 409, status(409, "AlreadyExists", `namespaces "${body.metadata.name}" already exists`, { name: body.metadata.name, kind: "namespaces" }));
    body.metadata.uid = crypto.randomUUID();
    body.metadata.creationTimestamp = now();
    body.status = { phase: "Active" };
    bump(body);
    store.namespaces.set(body.metadata.name, body);
    return reply(res, 201, body);
  }
  if (p[2] === "namespaces" && p.length === 4 && m === "GET") {
    const ns = store.namespaces.get(p[3]);
    return ns ? reply(res, 200, ns) : reply(res, 404, status(404, "NotFound", `namespaces "${p[3]}" not found`));
  }
  if (p[2] === "namespaces" && p.length === 6 && p[4] === "secrets" && m === "GET")
    return getSecret(res, p[3], p[5]);
  if (p[2] === "namespaces" && p.length >= 5) {
    const ns = p[3], res_ = p[4], name = p[5];
    const kinds = { pods: "Pod", resourcequotas: "ResourceQuota", limitranges: "LimitRange" };
    if (!kinds[res_]) return reply(res, 404, status(404, "NotFound", "the server could not find the requested resource"));
    if (m === "POST" && !name) {
      if ((bad = admit(entry, body, kinds[res_], ns))) return reply(res, 422, bad);
      if (res_ === "pods") {
        const [code, out] = createPod(ns, body);
        return reply(res, code, out);
      }
      if (!store.namespaces.has(ns)) return reply(res, 404, status(404, "NotFound", `namespaces "${ns}" not found`));
      const key = `${ns}/${body.metadata.name}`;
      if (store[res_].has(key)) return reply(res, 409, status(409, "AlreadyExists", `${res_} "${body.metadata.name}" already exists`));
      body.metadata.namespace = ns;
      body.metadata.uid = crypto.randomUUID();
      bump(body);
      store[res_].set(key, body);
      return reply(res, 201, body);
    }
    if (res_ === "pods" && name && m === "GET") {
      const pod = store.pods.get(`${ns}/${name}`);
      return pod ? reply(res, 200, pod) : reply(res, 404, status(404, "NotFound", `pods "${name}" not found`, { name, kind: "pods" }));
    }
    if (res_ === "pods" && name && m === "PATCH") {
      // a merge patch of a pod's labels and annotations (the rest of a pod is immutable
      // here, as the real server refuses most of it)
      entry.kind = "Pod";
      const pod = store.pods.get(`${ns}/${name}`);
      if (!pod) return reply(res, 404, status(404, "NotFound", `pods "${name}" not found`, { name, kind: "pods" }));
      if (req.headers["content-type"] !== "application/merge-patch+json")
        return reply(res, 415, status(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json`));
      const other = Object.keys(body || {}).filter((k) => k !== "metadata")
        .concat(Object.keys((body && body.metadata) || {}).filter((k) => k !== "labels" && k !== "annotations").map((k) => `metadata.${k}`));
      if (other.length) return reply(res, 422, status(422, "Invalid", `Pod "${name}" is invalid: spec: Forbidden: pod updates may not change fields other than labels and annotations (${other.join(", ")})`));
      const patched = mergePatch(pod, body);
      entry.errors = validate(patched);
      entry.valid = entry.errors.length === 0;
      if (!entry.valid) return reply(res, 422, status(422, "Invalid", `Pod is invalid: ${entry.errors.join("; ")}`));
      bump(patched);
      store.pods.set(`${ns}/${name}`, patched);
      podEvent("MODIFIED", patched);
      return reply(res, 200, patched);
    }
    if (res_ === "pods" && name && m === "DELETE") {
      if (body !== undefined && (bad = admit(entry, { apiVersion: "v1", ...body }, "DeleteOptions"))) return reply(res, 422, bad);
      entry.kind = "Pod";
      entry.deleteOptions = body;
      const pod = deletePod(`${ns}/${name}`);
      return pod ? reply(res, 200, pod) : reply(res, 404, status(404, "NotFound", `pods "${name}" not found`, { name, kind: "pods" }));
    }
  }
  return reply(res, 405, status(405, "MethodNotAllowed", `${m} is not supported on ${url.pathname}`));
}

// GET of a Secret by name, as the real server answers it (or as faults say).
function getSecret(res, ns, name) {
  const f = faults.secrets || {};
  let code = 200, out = store.secrets.get(`${ns}/${name}`);
  if (f.code === 403) {
    code = 403;
    out = status(403, "Forbidden", `secrets "${name}" is forbidden: User "system:serviceaccount:lantern-system:lanternd" cannot get resource "secrets" in API group "" in the namespace "${ns}"`, { name, kind: "secrets" });
  } else if (f.code) {
    code = f.code;
    out = status(f.code, "InternalError", `an error on the server ("injected") has prevented the request from succeeding (get secrets ${name})`);
  } else if (!out) {
    code = 404;
    out = status(404, "NotFound", `secrets "${name}" not found`, { name, kind: "secrets" });
  }
  if (f.delayMs) setTimeout(() => reply(res, code, out), f.delayMs);
  else reply(res, code, out);
  return code;
}

function authorized(req) {
  const auth = req.headers.authorization || "";
  if (args.token && auth === `Bearer ${args.token}`) return "token";
  if (req.socket.authorized) {
    const cert = req.socket.getPeerCertificate();
    return cert && cert.subject ? `cert:${cert.subject.CN}` : null;
  }
  return null;
}

const server = https.createServer({
  cert: fs.readFileSync(args.cert),
  key: fs.readFileSync(args.key),
  ca: fs.readFileSync(args.ca),
  requestCert: true,
  rejectUnauthorized: false,
}, (req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const url = new URL(req.url, "https://x");
    const entry = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), time: Date.now() };
    let body;
    const user = authorized(req);
    entry.user = user;
    if (!user) {
      entry.status = reply(res, 401, status(401, "Unauthorized", "Unauthorized"));
      log.push(entry);
      return;
    }
    if (chunks.length) {
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
        entry.body = body;
      } catch (e) {
        entry.status = reply(res, 400, status(400, "BadRequest", `the body is not JSON: ${e.message}`));
        log.push(entry);
        return;
      }
    }
    if (body === undefined && req.method === "POST") body = null;
    try {
      entry.status = route(req, res, body, entry);
    } catch (e) {
      entry.status = reply(res, 500, status(500, "InternalError", e.stack));
    }
    if (url.pathname.startsWith("/_test/")) return;
    log.push(entry);
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
process.on("SIGTERM", () => process.exit(0));
