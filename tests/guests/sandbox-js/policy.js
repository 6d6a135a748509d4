// A test guest that tries to reach out of its sandbox: environment variables, preopened
// directories, JavaScript's own globals. Each probe is a dynamic read whose key tells what it
// got. Built with componentize-js's default WASI features but `http` (stdio, random, clocks);
// built with `http` too (sandbox-js-http), `fetch` would need wasi:http, which the host refuses.

import { getEnvironment } from 'wasi:cli/environment@0.2.10';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.10';
import { CachePolicy } from './cachelet-policy.js';

const sandbox = new CachePolicy('sandbox-js', '0.1.0');
const outcome = (probe) => {
  try {
    return probe();
  } catch (e) {
    return `denied:${e && e.payload !== undefined ? e.payload : e}`;
  }
};
const rule = (text) => CachePolicy.rule(`probe:${text}`, { ttl: 0 });

// Every environment variable the guest can see.
sandbox.readRule('probe_env', {}, () =>
  rule(outcome(() => `env:${getEnvironment().map(([k]) => k).join(',') || 'none'}`)));

// Every directory the guest could open files in.
sandbox.readRule('probe_file', {}, () =>
  rule(outcome(() => `dirs:${getDirectories().map(([, path]) => path).join(',') || 'none'}`)));

// An HTTP request to 127.0.0.1:{port} with `fetch`, the engine's only way to a socket.
sandbox.readRule('probe_socket', { params: ['port'] }, async (args) => {
  try {
    const response = await fetch(`http://127.0.0.1:${args.get('port')}/`);
    return rule(`connected:${response.status}`);
  } catch (e) {
    return rule(`denied:${e && e.name}`);
  }
});

// JavaScript's own ways out, where they exist in the engine.
sandbox.readRule('probe_globals', {}, () =>
  rule(['process', 'require', 'Deno', 'fetch'].map((g) => `${g}=${typeof globalThis[g]}`).join(',')));

sandbox.read('get_user', { key: 'user:{user_id}', ttl: 300 });

export const policy = sandbox.exports();
