// Tests of the {{name}} policy in Node, no component built: `./test.sh` (`node --test`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Compiled } from './cachelet-policy.js';
import { policy } from './policy.js';

const compiled = new Compiled(policy);

test('declares without errors', () => assert.deepEqual(compiled.errors(), []));

test('get_item is keyed by its id', () => {
  assert.equal(compiled.read('get_item', { item_id: 42n }).key, 'item:42');
});

test('update_item invalidates it', () => {
  assert.deepEqual(compiled.write('update_item', { item_id: 42n }).invalidate, ['item:42']);
});
