// The guest contract, the same ops as contract-rust (see its src/lib.rs).
import { CachePolicy, recache, recacheCall } from './cachelet-policy.js';

const contract = new CachePolicy('contract', '0.1.0');
contract.read('get_item', { params: ['item_id'], key: 'item:{item_id}', ttl: 60 });
contract.readRule('get_computed', { params: ['id'] }, (args) =>
  CachePolicy.rule(args.render('computed:{id}'), { tags: ['computed'], ttl: 60 }));
contract.readRule('spin', { params: ['id'] }, () => {
  let x = 0;
  for (;;) x += 1;
});
contract.write('update_static', {
  params: ['item_id', 'id'],
  tags: ['item:{item_id}'],
  recache: [recache('get_item', { include: ['item_id'] }), recache('get_computed', { include: ['id'] })],
});
contract.write('update_dynamic', {
  params: ['item_id', 'id'],
  tags: ['item:{item_id}'],
  tagsWith: () => ['items'],
  recache: [recache('get_item', { include: ['item_id'] }), recache('get_computed', { include: ['id'] })],
});
contract.writeRule('update_computed', { params: ['item_id'] }, (args) =>
  args.has('item_id')
    ? CachePolicy.invalidate([args.render('item:{item_id}')], {
      recache: [recacheCall('get_item', { item_id: args.get('item_id') })],
    })
    : null);
contract.write('update_recache_with', {
  params: ['item_id'],
  tags: ['items'],
  recacheWith: (args) => [recacheCall('get_item', { item_id: args.get('item_id') })],
});
// Constants of every kind, added to a recache.
contract.write('update_extras', {
  params: ['item_id'],
  tags: ['items'],
  recache: [recache('get_item', { include: ['item_id'], extra: { f: 0.5, n: null, t: 'a:b:c', j: { a: 1 } } })],
});
// No params: the host cannot check `{id}`; `cachelet check` warns.
contract.read('undeclared', { key: 'undeclared:{id}' });

export const policy = contract.exports();
