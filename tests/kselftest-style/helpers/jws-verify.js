// jws-verify.js: a verifier that is not lanternd's code, for the identity tests: Node's
// own crypto (Ed25519 keys imported from JWK, crypto.verify) and its own JSON.
//   node jws-verify.js JWS_FILE JWKS_FILE     every signature of a compact or JSON JWS
//                                            with the key of its kid; then whether the
//                                            payload is RFC 8785 canonical JSON
//   node jws-verify.js --pem JWK_FILE         the key as SPKI PEM (for openssl)
// Prints one line per check; exits 0 only if every check passed.
'use strict';

const crypto = require('crypto');
const fs = require('fs');

const b64u = (s) => Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64');

// RFC 8785: JSON.stringify's strings and numbers are JCS's; members sorted by UTF-16
// code units, which is what Array.prototype.sort compares.
function jcs(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(jcs).join(',') + ']';
  return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + jcs(v[k])).join(',') + '}';
}

const args = process.argv.slice(2);
if (args[0] === '--pem') {
  const jwk = JSON.parse(fs.readFileSync(args[1], 'utf8'));
  process.stdout.write(crypto.createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }));
  process.exit(0);
}
const text = fs.readFileSync(args[0], 'utf8').trim();
const jwks = JSON.parse(fs.readFileSync(args[1], 'utf8'));
let payload, sigs;
if (text.startsWith('{')) {
  const doc = JSON.parse(text);
  payload = doc.payload;
  sigs = doc.signatures || [{ protected: doc.protected, signature: doc.signature }];
} else {
  const [h, p, s] = text.split('.');
  payload = p;
  sigs = [{ protected: h, signature: s }];
}
let ok = true;
for (const s of sigs) {
  const header = JSON.parse(b64u(s.protected).toString('utf8'));
  const jwk = (jwks.keys || []).find((k) => k.kid === header.kid);
  let good = false;
  if (jwk && header.alg === 'EdDSA') {
    const key = crypto.createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: 'jwk' });
    good = crypto.verify(null, Buffer.from(s.protected + '.' + payload), key, b64u(s.signature));
  }
  console.log((good ? 'ok ' : 'bad ') + header.kid);
  ok = ok && good;
}
const raw = b64u(payload).toString('utf8');
let canonical = false;
try { canonical = jcs(JSON.parse(raw)) === raw; } catch (e) { canonical = false; }
console.log(canonical ? 'jcs ok' : 'jcs bad');
process.exit(ok && canonical ? 0 : 1);
