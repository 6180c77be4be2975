// Reference identity provider for bench/idp: node-oidc-provider behind Node's cluster
// module, storing through a Redis adapter (redis_adapter.js), with one confidential
// client allowed two grants:
// - client_credentials: access tokens issued as ES256-signed JWTs for one resource server;
// - authorization_code: codes minted beforehand through the provider's own models (below),
//   redeemed at /token for an opaque access token (stored) and an ES256 id_token.
//
// Environment: PORT (default 3000), WORKERS (default 2), CLIENT_ID, CLIENT_SECRET,
// REDIRECT_URI, REDIS_URL (default redis://127.0.0.1:6379), REDIS_PREFIX (key prefix,
// default bench-idp-node:), MINT_PORT (optional: the primary then answers
// GET /mint?n=N on 127.0.0.1:MINT_PORT with N fresh authorization codes, one a line,
// each with its own Grant, as /authorize would leave them).
// Prints "ready" on stdout once every worker listens (and the minting port, if any).

import cluster from 'node:cluster';
import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { connect, RedisAdapter } from './redis_adapter.js';

const port = Number(process.env.PORT || 3000);
const workers = Number(process.env.WORKERS || 2);
const issuer = `http://localhost:${port}`;
const resource = 'urn:bench:api';
const clientId = process.env.CLIENT_ID || 'bench';
const redirectUri = process.env.REDIRECT_URI || 'https://client.bench.test/callback';
const accountId = 'bench-usager';

/** The provider, configured alike in every process (keys from the primary). */
async function provider() {
  const { default: Provider } = await import('oidc-provider');
  connect(process.env.REDIS_URL || 'redis://127.0.0.1:6379', process.env.REDIS_PREFIX || 'bench-idp-node:');
  return new Provider(issuer, {
    adapter: RedisAdapter,
    clients: [
      {
        client_id: clientId,
        client_secret: process.env.CLIENT_SECRET || 'bench-secret',
        grant_types: ['client_credentials', 'authorization_code'],
        response_types: ['code'],
        redirect_uris: [redirectUri],
        token_endpoint_auth_method: 'client_secret_post',
        id_token_signed_response_alg: 'ES256',
      },
    ],
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    // The broker's lifetimes: codes 60 s, access tokens 120 s, id_tokens 5 minutes.
    ttl: { ClientCredentials: 600, AuthorizationCode: 60, AccessToken: 120, IdToken: 300, Grant: 600 },
    findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    jwks: { keys: [JSON.parse(process.env.BENCH_JWK)] },
    cookies: { keys: [process.env.BENCH_COOKIE_KEY] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api',
          audience: resource,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
  });
}

/** One authorization code as /authorize leaves it: a Grant saved, then the code. */
async function mintCode(p, client) {
  const grant = new p.Grant({ accountId, clientId });
  grant.addOIDCScope('openid');
  const grantId = await grant.save();
  const code = new p.AuthorizationCode({
    accountId,
    client,
    grantId,
    redirectUri,
    scope: 'openid',
    nonce: randomBytes(16).toString('hex'),
    acr: 'eidas1',
    amr: ['otp', 'mfa'],
    authTime: Math.floor(Date.now() / 1000) - 30,
    expiresWithSession: false,
  });
  return code.save();
}

/** GET /mint?n=N: N codes, one a line, saved 1024 at a time. */
function serveMinting(p, mintPort, ready) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const n = Number(url.searchParams.get('n'));
    if (url.pathname !== '/mint' || !Number.isInteger(n) || n < 1 || n > 5_000_000) {
      res.writeHead(400).end('GET /mint?n=N\n');
      return;
    }
    try {
      const client = await p.Client.find(clientId);
      const codes = [];
      while (codes.length < n) {
        const batch = Math.min(1024, n - codes.length);
        codes.push(...await Promise.all(Array.from({ length: batch }, () => mintCode(p, client))));
      }
      const body = `${codes.join('\n')}\n`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }).end(body);
    } catch (err) {
      console.error(err);
      res.writeHead(500).end(`${err}\n`);
    }
  });
  server.listen(mintPort, '127.0.0.1', ready);
}

if (cluster.isPrimary) {
  // One signing key and one cookie key for every worker, so that any worker answers
  // any request the same way.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };
  const env = { BENCH_JWK: JSON.stringify(jwk), BENCH_COOKIE_KEY: randomBytes(32).toString('hex') };
  Object.assign(process.env, env);
  const mintPort = Number(process.env.MINT_PORT || 0);
  let waiting = workers + (mintPort ? 1 : 0);
  const started = () => {
    if (--waiting === 0) console.log('ready');
  };
  let stopping = false;
  for (let i = 0; i < workers; i += 1) cluster.fork(env);
  cluster.on('message', (_worker, msg) => {
    if (msg === 'listening') started();
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} exited (${signal || code})`);
      process.exit(1);
    }
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (mintPort) serveMinting(await provider(), mintPort, started);
} else {
  const p = await provider();
  p.on('server_error', (_ctx, err) => console.error(err));
  p.listen(port, '127.0.0.1', () => process.send('listening'));
}
