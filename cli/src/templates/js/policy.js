// The {{name}} cache policy. Build: `./build.sh` (-> {{name}}.wasm).

import { CachePolicy, recache } from './cachelet-policy.js';

const declared = new CachePolicy('{{name}}', '0.1.0');

// Every op declares its params: a misspelled placeholder is then refused at load.

// A read: cached under item:{item_id} for 300 s, tagged with its key.
declared.read('get_item', { params: ['item_id'], key: 'item:{item_id}', ttl: 300 });

// A write: invalidates what get_item cached for that item, then warms it again.
declared.write('update_item', {
  params: ['item_id'],
  tags: ['item:{item_id}'],
  recache: [recache('get_item', { include: ['item_id'] })],
});

// The world's `policy` export.
export const policy = declared.exports();
