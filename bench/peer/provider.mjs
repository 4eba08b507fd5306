// A peer for bench/peer.sh: node oidc-provider on loopback, configured for what Mandate's
// `client_credentials` does — the client `support-v2` authenticates with `private_key_jwt`
// (Ed25519, single-use `jti`) and gets an EdDSA-signed JWT access token for one resource.
//
//   node provider.mjs --port 0 --client-jwk <path to support-v2.jwk> [--workers N]
//
// Environment instead of flags: PEER_PORT, PEER_CLIENT_JWK, PEER_WORKERS. Port 0 lets the kernel
// pick; the primary prints `peer is listening on http://127.0.0.1:<port>` once every worker is
// up. With N > 1 workers it runs a node cluster: the primary binds, the workers share the socket
// (connections are handed out round-robin), every worker signs with the same key, and each keeps
// its own in-memory store (so `jti` replay detection is per worker).
//
// Nothing is logged per request: oidc-provider's own logging is the `debug` package (off unless
// DEBUG is set), and Koa's error log is silenced; run with NODE_ENV=production.

import cluster from 'node:cluster';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

const RESOURCE = 'https://crm.example.com';
const SCOPE = 'tickets:read';
const CLIENT_ID = 'support-v2';
// Mandate's default token lifetime (`tokens.default_ttl`).
const ACCESS_TOKEN_TTL = 300;

function fail(message) {
  process.stderr.write(`peer: ${message}\n`);
  process.exit(1);
}

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PEER_PORT ?? '0' },
    'client-jwk': { type: 'string', default: process.env.PEER_CLIENT_JWK },
    workers: { type: 'string', default: process.env.PEER_WORKERS ?? '1' },
  },
});

const port = Number(opts.port);
const workers = Number(opts.workers);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`\`--port ${opts.port}\` is not a port`);
if (!Number.isInteger(workers) || workers < 1 || workers > 16) fail('`--workers` must be 1–16');
if (!opts['client-jwk']) fail('give the client key with --client-jwk or PEER_CLIENT_JWK');

// The client's public JWKS: the public half of the `support-v2` key Mandate's agent uses.
function clientJwks(path) {
  let jwk;
  try {
    jwk = JSON.parse(fs.readFileSync(path, 'utf8'));
  } catch (e) {
    fail(`cannot read \`${path}\`: ${e.message}`);
  }
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') {
    fail(`\`${path}\` is not an Ed25519 JWK`);
  }
  return { keys: [{ kty: 'OKP', crv: 'Ed25519', x: jwk.x, kid: jwk.kid, alg: 'EdDSA', use: 'sig' }] };
}

// A plain in-memory adapter: a Map per model with expiry, swept every few seconds. Unlike
// oidc-provider's bundled memory adapter (an LRU of 1000 entries in all, which forgets a `jti`
// after ~1000 newer ones), it keeps every `ReplayDetection` entry until the assertion expires.
// JWT access tokens are not stored (oidc-provider only emits `issued` for them).
const stores = new Map();
function storeFor(name) {
  let s = stores.get(name);
  if (!s) {
    s = new Map();
    stores.set(name, s);
  }
  return s;
}
function sweep() {
  const now = Date.now();
  for (const s of stores.values()) {
    for (const [id, e] of s) if (e.expiresAt <= now) s.delete(id);
  }
}
class MapAdapter {
  constructor(name) {
    this.store = storeFor(name);
  }
  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(id, { payload, expiresAt });
  }
  async find(id) {
    const e = this.store.get(id);
    if (!e) return undefined;
    if (e.expiresAt <= Date.now()) {
      this.store.delete(id);
      return undefined;
    }
    return e.payload;
  }
  async findByUserCode() { return undefined; }
  async findByUid() { return undefined; }
  async consume(id) {
    const e = this.store.get(id);
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    this.store.delete(id);
  }
  async revokeByGrantId() {}
}

async function serve(signingJwk, jwks, listenPort) {
  const { default: Provider } = await import('oidc-provider');
  // Bind first so the issuer carries the real port; with a cluster the primary chose it.
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    adapter: MapAdapter,
    jwks: { keys: [signingJwk] },
    clients: [{
      client_id: CLIENT_ID,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'EdDSA',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: SCOPE,
      jwks,
    }],
    clientAuthMethods: ['private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['EdDSA'],
      idTokenSigningAlgValues: ['EdDSA'],
    },
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: 'EdDSA',
      token_endpoint_auth_method: 'private_key_jwt',
    },
    scopes: [SCOPE],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (resource !== RESOURCE) {
            throw new Provider.errors.InvalidTarget();
          }
          return {
            scope: SCOPE,
            audience: RESOURCE,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'EdDSA' } },
          };
        },
      },
    },
    ttl: { ClientCredentials: ACCESS_TOKEN_TTL },
  });
  // Koa logs every error with console.error unless silent; the answers themselves still carry
  // the error.
  provider.silent = true;
  server.on('request', provider.callback());
  setInterval(sweep, 5000).unref();
  return issuer;
}

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = crypto.createHash('sha256').update(jwk.x).digest('base64url').slice(0, 16);
  return { ...jwk, kid, alg: 'EdDSA', use: 'sig' };
}

if (cluster.isPrimary) {
  const jwks = clientJwks(opts['client-jwk']);
  const key = signingKey();
  if (workers === 1) {
    const issuer = await serve(key, jwks, port);
    process.stdout.write(`peer is listening on ${issuer} (1 process, pid ${process.pid})\n`);
    // Exit normally on a signal, so `node --cpu-prof` can write its profile.
    process.on('SIGTERM', () => process.exit(0));
    process.on('SIGINT', () => process.exit(0));
  } else {
    // Workers that listen on the same address and port (0 included) share one socket the
    // primary holds, so they all end up on the same kernel-chosen port.
    cluster.setupPrimary({ silent: false });
    const env = {
      PEER_PORT: String(port),
      PEER_SIGNING_JWK: JSON.stringify(key),
      PEER_CLIENT_JWKS: JSON.stringify(jwks),
    };
    let up = 0;
    for (let i = 0; i < workers; i += 1) {
      const w = cluster.fork(env);
      w.on('message', (m) => {
        if (m?.listening) {
          up += 1;
          if (up === workers) {
            process.stdout.write(`peer is listening on ${m.listening} (${workers} workers, primary pid ${process.pid})\n`);
          }
        }
      });
    }
    cluster.on('exit', (w, code, signal) => {
      process.stderr.write(`peer: worker ${w.process.pid} exited (${signal ?? code})\n`);
      process.exit(1);
    });
    const stop = () => {
      cluster.removeAllListeners('exit');
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
      process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  }
} else {
  const issuer = await serve(
    JSON.parse(process.env.PEER_SIGNING_JWK),
    JSON.parse(process.env.PEER_CLIENT_JWKS),
    Number(process.env.PEER_PORT),
  );
  process.send({ listening: issuer });
}
