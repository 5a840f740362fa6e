// schema.js: validates a Kubernetes object as the API server would before storing it,
// with the official OpenAPI schemas compiled in the npm package kubernetes-models:
// the schema itself, unknown fields (what --validate=strict / fieldValidation=Strict
// refuses: the compiled validators read every field they know, so a field no
// validator read is one the schema does not have), and the metadata rules the schema
// cannot express (names, label and annotation syntax). Used by the test API server
// (server.js) and the manifest check (validate-manifests.js).
"use strict";

const GROUPS = {
  "v1": "v1",
  "apps/v1": "apps/v1",
  "rbac.authorization.k8s.io/v1": "rbac.authorization.k8s.io/v1",
  "node.k8s.io/v1": "node.k8s.io/v1",
  "scheduling.k8s.io/v1": "scheduling.k8s.io/v1",
  "policy/v1": "policy/v1",
};

function modelFor(apiVersion, kind) {
  if (!/^[A-Za-z]+$/.test(kind || "")) return null;
  if (kind === "DeleteOptions")
    return require("@kubernetes-models/apimachinery/apis/meta/v1/DeleteOptions").DeleteOptions;
  const dir = GROUPS[apiVersion];
  if (!dir) return null;
  try {
    return require(`kubernetes-models/${dir}/${kind}`)[kind];
  } catch (e) {
    return null;
  }
}

// Every object and array reachable from o, wrapped so reads are recorded.
function tracked(root) {
  const recs = [];
  const proxies = new WeakMap();
  function wrap(o, path) {
    if (o === null || typeof o !== "object") return o;
    if (proxies.has(o)) return proxies.get(o);
    const rec = { o, path, read: new Set(), iterated: false };
    recs.push(rec);
    const p = new Proxy(o, {
      get(t, k, r) {
        const v = Reflect.get(t, k, r);
        if (typeof k !== "string") return v;
        rec.read.add(k);
        return wrap(v, `${path}/${k}`);
      },
      ownKeys(t) {
        rec.iterated = true;
        return Reflect.ownKeys(t);
      },
    });
    proxies.set(o, p);
    return p;
  }
  return { proxy: wrap(root, ""), recs };
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
// resource.Quantity's grammar
const QUANTITY = /^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$/;
// namespaced names: pods, secrets, ... are DNS subdomains; namespaces are DNS labels
const LABEL_NAMED = new Set(["Namespace", "Service"]);

function qualifiedKey(k) {
  const slash = k.lastIndexOf("/");
  const prefix = slash >= 0 ? k.slice(0, slash) : null;
  const name = slash >= 0 ? k.slice(slash + 1) : k;
  if (prefix !== null && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) return false;
  return name.length <= 63 && QUALIFIED_NAME.test(name);
}

function checkMetadata(obj, errs) {
  const md = obj.metadata;
  if (obj.kind === "DeleteOptions") return;
  if (!md || typeof md !== "object") {
    errs.push("metadata: required");
    return;
  }
  if (typeof md.name !== "string" || !md.name) errs.push("metadata.name: required");
  else if (LABEL_NAMED.has(obj.kind) ? (md.name.length > 63 || !DNS_LABEL.test(md.name))
    : (md.name.length > 253 || !DNS_SUBDOMAIN.test(md.name)))
    errs.push(`metadata.name: "${md.name}": not a valid ${LABEL_NAMED.has(obj.kind) ? "DNS label" : "DNS subdomain"}`);
  for (const [k, v] of Object.entries(md.labels || {})) {
    if (!qualifiedKey(k)) errs.push(`metadata.labels: key "${k}": not a qualified name`);
    if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v))
      errs.push(`metadata.labels["${k}"]: "${v}": not a valid label value`);
  }
  let size = 0;
  for (const [k, v] of Object.entries(md.annotations || {})) {
    if (!qualifiedKey(k)) errs.push(`metadata.annotations: key "${k}": not a qualified name`);
    size += k.length + String(v).length;
  }
  if (size > 256 * 1024) errs.push("metadata.annotations: larger than 256 KiB");
}

// Quantities wherever the schema says "a quantity" but does not check its syntax.
function checkQuantities(obj, errs) {
  const q = (path, m) => {
    for (const [k, v] of Object.entries(m || {}))
      if (!QUANTITY.test(String(v))) errs.push(`${path}["${k}"]: "${v}": not a quantity`);
  };
  const spec = obj.spec || {};
  const pod = obj.kind === "Pod" ? spec : (spec.template || {}).spec;
  if (pod) {
    for (const [i, c] of [...(pod.initContainers || []), ...(pod.containers || [])].entries()) {
      q(`containers[${i}].resources.limits`, (c.resources || {}).limits);
      q(`containers[${i}].resources.requests`, (c.resources || {}).requests);
      for (const [r, v] of Object.entries((c.resources || {}).requests || {})) {
        const lim = ((c.resources || {}).limits || {})[r];
        if (lim !== undefined && parseQuantity(v) > parseQuantity(lim))
          errs.push(`containers[${i}].resources.requests["${r}"]: ${v} is more than its limit ${lim}`);
      }
    }
    for (const v of pod.volumes || [])
      if (v.emptyDir && v.emptyDir.sizeLimit !== undefined && !QUANTITY.test(String(v.emptyDir.sizeLimit)))
        errs.push(`volumes["${v.name}"].emptyDir.sizeLimit: "${v.emptyDir.sizeLimit}": not a quantity`);
  }
  if (obj.kind === "ResourceQuota") q("spec.hard", spec.hard);
  if (obj.kind === "RuntimeClass") q("overhead.podFixed", (obj.overhead || {}).podFixed);
  if (obj.kind === "LimitRange")
    for (const [i, l] of (spec.limits || []).entries())
      for (const f of ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"]) q(`spec.limits[${i}].${f}`, l[f]);
}

function parseQuantity(s) {
  const m = String(s).match(/^([+-]?[0-9.]+)(.*)$/);
  if (!m) return NaN;
  const mult = { "": 1, m: 1e-3, u: 1e-6, n: 1e-9, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
    Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, Pi: 1024 ** 5, Ei: 1024 ** 6 };
  if (m[2] in mult) return parseFloat(m[1]) * mult[m[2]];
  const e = m[2].match(/^[eE]([+-]?\d+)$/);
  return e ? parseFloat(m[1]) * 10 ** parseInt(e[1], 10) : NaN;
}

// Returns the list of everything wrong with obj (empty: valid).
function validate(obj) {
  const errs = [];
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return ["not an object"];
  const Model = modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [`apiVersion "${obj.apiVersion}" kind "${obj.kind}": no schema for it`];
  const { proxy, recs } = tracked(obj);
  try {
    Model.prototype.validate.call(proxy);
  } catch (e) {
    errs.push(...String(e.message).split(", ").map((s) => `schema: ${s}`));
  }
  for (const rec of recs) {
    if (rec.iterated || Array.isArray(rec.o)) continue;
    for (const k of Object.keys(rec.o))
      if (!rec.read.has(k)) errs.push(`unknown field "${rec.path.slice(1).replace(/\//g, ".")}${rec.path ? "." : ""}${k}"`);
  }
  checkMetadata(obj, errs);
  checkQuantities(obj, errs);
  return errs;
}

module.exports = { validate, modelFor, parseQuantity };
