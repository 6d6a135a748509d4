// The seed policy in JavaScript: one operation for each example of the svc-infra cache guide
// (`@cache_read`, `@cache_write`, `recache`, `resource`, TTL buckets). The same policy as
// examples/policies/seed-rust, op for op; see README.md.

import { CachePolicy, recache, resource, TTL } from './cachelet-policy.js';

const seed = new CachePolicy('seed-js', '0.1.0');

// @cache_read: key templates, several params, the tuple form, TTL buckets.
seed.read('get_user', { params: ['user_id'], route: 'GET /users/{user_id}', key: 'user:{user_id}', ttl: 300 });
seed.read('get_org_user', {
  params: ['org_id', 'user_id'], route: 'GET /orgs/{org_id}/users/{user_id}',
  key: 'org:{org_id}:user:{user_id}',
  tags: ['user:{user_id}', 'org:{org_id}:users'],
  ttl: 600,
});
seed.read('get_user_card', { params: ['user_id'], key: ['user', 'card', '{user_id}'].join(':'), ttl: TTL.DEFAULT });
seed.read('get_rate_limit', { params: ['ip'], key: 'rate:{ip}', ttl: TTL.SHORT });
seed.read('get_config', { params: ['key'], key: 'config:{key}', ttl: TTL.LONG });
seed.read('get_user_with_options', {
  params: ['user_id', 'include_deleted'],
  key: 'user:{user_id}:opts:{include_deleted}',
  tags: ['user:{user_id}'],
  ttl: 300,
});
seed.read('get_user_details', {
  params: ['user_id', 'expand'],
  key: 'user:{user_id}:details:{expand}',
  tags: ['user:{user_id}'],
  ttl: 300,
});

// resource('user', 'user_id'): keys user:{suffix}:{user_id}, all tagged user:{user_id}.
const user = resource('user', 'user_id');
seed.read('get_user_profile', { params: ['user_id'], route: 'GET /users/{user_id}/profile', resource: user, suffix: 'profile', ttl: 300, lock: true });
seed.read('get_user_settings', { params: ['user_id'], route: 'GET /users/{user_id}/settings', resource: user, suffix: 'settings', ttl: 600 });
seed.read('get_user_profile_v2', {
  params: ['user_id'],
  resource: user,
  suffix: 'profile',
  key: 'v2:user:{user_id}:profile',
  tags: ['user:{user_id}', 'profiles'],
  ttl: 300,
});

// Early refresh, sliding expiry, computed rules, "do not cache".
seed.read('get_leaderboard', { params: ['board'], key: 'leaderboard:{board}', ttl: 60, earlyTtl: 45 });
// A short early window, for tests that wait for the background refresh.
seed.read('get_ticker', { params: ['symbol'], key: 'ticker:{symbol}', ttl: 10, earlyTtl: 1 });
seed.read('get_session', { params: ['sid'], key: 'session:{sid}', ttl: TTL.SHORT, refresh: true });
seed.readRule('get_search', { params: ['q'] }, (args) =>
  args.get('q') === ''
    ? null // an empty query is not cached
    : CachePolicy.rule(args.render('search:{q}'), { tags: ['search'], ttl: 120 }));
seed.read('get_uncached', { params: ['id'], key: 'uncached:{id}', ttl: 0 });

// @cache_write: tags, dynamic tags, recache with include / rename / extra.
seed.write('update_user', {
  params: ['user_id', 'data'], route: 'PUT /users/{user_id}',
  tags: ['user:{user_id}'],
  recache: [recache('get_user', { include: ['user_id'] })],
});
seed.write('update_user_org', { params: ['user_id', 'org_id'], route: 'PUT /orgs/{org_id}/users/{user_id}', tags: ['user:{user_id}', 'org:{org_id}:users'] });
seed.write('remove_user_from_org', { params: ['user_id', 'org_id'], tags: ['user:{user_id}', 'org:{org_id}:members'] });
seed.write('update_user_dynamic', {
  params: ['user_id'],
  tagsWith: (args) => [args.render('user:{user_id}'), args.render('user:{user_id}:profile')],
});
seed.write('move_org_user', {
  params: ['org_id', 'id'],
  tags: ['user:{id}'],
  recache: [recache('get_org_user', { rename: { id: 'user_id' } })],
});
seed.write('update_user_options', {
  params: ['user_id', 'data'],
  tags: ['user:{user_id}'],
  recache: [recache('get_user_with_options', { include: ['user_id'], extra: { include_deleted: false } })],
});
seed.write('update_user_details', {
  params: ['user_id'],
  tags: ['user:{user_id}'],
  recache: [recache('get_user_details', { include: ['user_id'], extra: { expand: true } })],
});
seed.write('update_user_entity', {
  params: ['user_id', 'data'], route: 'PUT /users/{user_id}/profile',
  resource: user,
  recache: [
    recache('get_user_profile', { include: ['user_id'] }),
    recache('get_user_settings', { include: ['user_id'] }),
  ],
  recacheMaxConcurrency: 3,
});
seed.write('update_search', { params: [], tags: ['search'] });

// The world's `policy` export.
export const policy = seed.exports();
