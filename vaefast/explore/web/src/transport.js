// How the page reaches the explorer's API. Served by `vaefast explore`: fetch from the
// server that served it. In a notebook widget the page lives in an iframe with no server
// behind it: each request is posted to the widget, which relays it over the kernel's
// channel to the same API running in the kernel, and the answer comes back the same way.
export const relayed = Boolean(window.VAEFAST_RELAY);

const pending = new Map();
let nextId = 0;
const commands = [];

if (relayed) {
  window.addEventListener('message', (event) => {
    const m = event.data;
    if (event.source !== window.parent || !m) return;
    if (m.vaefast === 'response' && pending.has(m.id)) {
      const done = pending.get(m.id);
      pending.delete(m.id);
      done(new Response(m.status === 204 ? null : m.body, { status: m.status, headers: m.headers }));
    } else if (m.vaefast === 'command') {
      commands.forEach((handler) => handler(m));
    }
  });
}

// fetch(path, options), or its relayed equivalent: a Response either way.
export function request(path, options = {}) {
  if (!relayed) return fetch(path, options);
  return new Promise((resolve) => {
    const id = nextId;
    nextId += 1;
    pending.set(id, resolve);
    const body = options.body ?? null;
    window.parent.postMessage({ vaefast: 'request', id, path, method: options.method || 'GET', body }, '*');
  });
}

// What an <img> loads for an API path: the path, or the relayed image as a blob URL
// (`release` frees it once shown).
export async function imageUrl(path) {
  if (!relayed || !path.startsWith('/')) return path;
  return URL.createObjectURL(await (await request(path)).blob());
}

export function release(url) {
  if (url.startsWith('blob:')) URL.revokeObjectURL(url);
}

// Tell the notebook what the user did (nothing outside a notebook).
export function tell(message) {
  if (relayed) window.parent.postMessage({ vaefast: 'event', ...message }, '*');
}

// Handle what the notebook asks ({ vaefast: 'command', ... }).
export function onCommand(handler) {
  commands.push(handler);
}
