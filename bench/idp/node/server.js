// Reference identity provider for bench/idp: node-oidc-provider behind Node's cluster
// module, one client allowed the client_credentials grant, access tokens issued as
// ES256-signed JWTs for one resource server.
//
// Environment: PORT (default 3000), WORKERS (default 2), CLIENT_ID, CLIENT_SECRET.
// Prints "ready" on stdout once every worker listens.

import cluster from 'node:cluster';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

const port = Number(process.env.PORT || 3000);
const workers = Number(process.env.WORKERS || 2);
const issuer = `http://localhost:${port}`;
const resource = 'urn:bench:api';

if (cluster.isPrimary) {
  // One signing key and one cookie key for every worker, so that any worker answers
  // any request the same way.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };
  const env = { BENCH_JWK: JSON.stringify(jwk), BENCH_COOKIE_KEY: randomBytes(32).toString('hex') };
  let listening = 0;
  let stopping = false;
  for (let i = 0; i < workers; i += 1) cluster.fork(env);
  cluster.on('message', (_worker, msg) => {
    if (msg === 'listening' && ++listening === workers) console.log('ready');
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
} else {
  const { default: Provider } = await import('oidc-provider');
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: process.env.CLIENT_ID || 'bench',
        client_secret: process.env.CLIENT_SECRET || 'bench-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
        id_token_signed_response_alg: 'ES256',
      },
    ],
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    ttl: { ClientCredentials: 600 },
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
  provider.on('server_error', (_ctx, err) => console.error(err));
  provider.listen(port, '127.0.0.1', () => process.send('listening'));
}
