// node-oidc-provider's storage adapter on Redis, for bench/idp: every cluster worker (and
// the primary, which mints authorization codes) sees the same codes, grants and tokens.
//
// Layout, under the key prefix given to `connect` (one run's keys, removed at its end):
//   <Model>:<id>        a hash: `payload` (the model's JSON), `consumed` (epoch seconds,
//                       once consumed); expires with the model
//   grant:<grantId>     a set of the keys issued from one grant, to revoke them together
//   uid:<uid>           the id of the session with that uid
//   userCode:<code>     the id of the device code with that user code

import Redis from 'ioredis';

let redis;

/** Opens the connection every adapter instance of this process uses. */
export function connect(url, keyPrefix) {
  redis = new Redis(url, { keyPrefix, maxRetriesPerRequest: 1 });
  // Marks a stored model consumed, only while it is still stored (no TTL-less leftover).
  redis.defineCommand('consumeStored', {
    numberOfKeys: 1,
    lua: "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'consumed', ARGV[1]) end return 0",
  });
  return redis;
}

// Models whose instances carry a grantId and go when their grant is revoked.
const issuedFromGrant = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

const epochSeconds = () => Math.floor(Date.now() / 1000);

export class RedisAdapter {
  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const tx = redis.multi().del(key).hset(key, 'payload', JSON.stringify(payload));
    if (expiresIn) tx.expire(key, expiresIn);
    if (issuedFromGrant.has(this.name) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      tx.sadd(grantKey, key);
      // The index lives as long as its longest-lived member.
      if (expiresIn) tx.expire(grantKey, expiresIn, 'NX').expire(grantKey, expiresIn, 'GT');
    }
    if (payload.uid) tx.set(`uid:${payload.uid}`, id, 'EX', expiresIn || 3600);
    if (payload.userCode) tx.set(`userCode:${payload.userCode}`, id, 'EX', expiresIn || 3600);
    await tx.exec();
  }

  async find(id) {
    const stored = await redis.hgetall(this.key(id));
    if (!stored || !stored.payload) return undefined;
    const payload = JSON.parse(stored.payload);
    if (stored.consumed) payload.consumed = Number(stored.consumed);
    return payload;
  }

  async findByUid(uid) {
    const id = await redis.get(`uid:${uid}`);
    return id ? this.find(id) : undefined;
  }

  async findByUserCode(userCode) {
    const id = await redis.get(`userCode:${userCode}`);
    return id ? this.find(id) : undefined;
  }

  async consume(id) {
    await redis.consumeStored(this.key(id), epochSeconds());
  }

  async destroy(id) {
    await redis.del(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    const keys = await redis.smembers(grantKey);
    await redis.del(...keys, grantKey);
  }
}
