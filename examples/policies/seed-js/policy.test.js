// The seed's rules, tested in Node without building a component (`node --test`, with
// cachelet-policy.js beside policy.js): what the host would get from the component.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Compiled } from './cachelet-policy.js';
import { policy } from './policy.js';

const seed = new Compiled(policy);

test('declares every op without errors', () => {
  assert.deepEqual(seed.errors(), []);
  assert.equal(seed.describe().ops.length, 24);
});

test('a computed read renders and escapes like the host', () => {
  assert.equal(seed.read('get_search', { q: 'a:b' }).key, 'search:a%3Ab');
  assert.equal(seed.read('get_search', { q: '' }), undefined);
});

test('a static write and its recache', () => {
  const rule = seed.write('update_user', { user_id: 42n, data: { name: 'x' } });
  assert.deepEqual(rule.invalidate, ['user:42']);
  assert.deepEqual(rule.recache, [{ op: 'get_user', args: [['user_id', { tag: 'integer', val: 42n }]] }]);
});

test('errors name the op', () => {
  assert.throws(() => seed.read('get_user', { usr_id: 1n }), /^get_user: no argument `user_id`/);
});
