// Every declaration mistake the SDKs refuse, one op each (the same ops as broken-rust):
// `describe` must return them all and the host must not load it.
import { CachePolicy, recache } from './cachelet-policy.js';

const declared = new CachePolicy('broken', '0.1.0');
declared.read('ok_read', { key: 'ok:{id}' });
declared.read('brace_key', { key: 'user:{user_id' });
declared.read('joined_key', { key: 'org:{org_id}{user_id}' });
declared.read('joined_tag', { key: 'user:{user_id}', tags: ['user:{user_id}', 'org:{org_id}-{user_id}'] });
declared.read('no_key', { ttl: 3 });
declared.read('early', { key: 'k', ttl: 30, earlyTtl: 30 });
declared.read('undeclared_param', { key: 'k:{a}:{b}', params: ['a'] });
declared.read('bad_param', { key: 'k:{a}', params: ['a-b'] });
declared.read('twice', { key: 'a' });
// The mistake that used to flush the namespace on every write.
declared.write('broken_tag_write', { tags: ['user:{user_id'] });
declared.write('joined_write', { tags: ['t:{a}-{b}'] });
declared.write('empty_write');
declared.write('recache_write', { tags: ['t'], recache: [recache('broken_tag_write')] });
declared.write('bad_include', { tags: ['t'], recache: [recache('ok_read', { include: ['a-b'] })] });
declared.write('twice', { tags: ['a'] });
// A read of another policy: not a mistake.
declared.write('elsewhere', { tags: ['t'], recache: [recache('get_user')] });
// A misspelled placeholder, caught by the declared params.
declared.write('misspelled', { params: ['item_id'], tags: ['item:{item_idd}'] });
// A computed rule combined with a declared one.
declared.readRule('computed_read', { key: 'k' }, () => null);
declared.writeRule('computed_write', { recache: [recache('ok_read')] }, () => null);
// What Rust's and C's compilers refuse, refused at load.
declared.read('string_tags', { key: 'search:{q}', tags: 'search' });
declared.read('unknown_option', { key: 'k', tag: ['t'] });
declared.read('ttl_range', { key: 'k', ttl: -1 });
declared.read('early_range', { key: 'k', ttl: 60, earlyTtl: -1 });
declared.write('single_recache', { tags: ['t'], recache: recache('ok_read') });

export const policy = declared.exports();
