// The explorer in a notebook (an anywidget module): the explorer's page in an iframe. The
// page's API requests are relayed to the kernel, which answers them with the same API the
// server runs; the selection is synced to the widget's `selected` trait, and the kernel's
// commands (select rows, colour by a column) are passed on to the page.
function render({ model, el }) {
  const view = Math.random().toString(36).slice(2); // this view's requests and answers
  const frame = document.createElement('iframe');
  frame.style.cssText = `width: 100%; height: ${model.get('height')}px; border: 0; display: block`;
  frame.srcdoc = model.get('_page');
  el.appendChild(frame);

  const fromPage = (event) => {
    const m = event.data;
    if (event.source !== frame.contentWindow || !m) return;
    if (m.vaefast === 'request') {
      const binary = m.body instanceof ArrayBuffer;
      model.send(
        { vaefast: 'request', view, id: m.id, path: m.path, method: m.method, body: binary ? null : m.body },
        undefined,
        binary ? [m.body] : [],
      );
    } else if (m.vaefast === 'event' && m.selection) {
      model.set('selected', m.selection);
      model.save_changes();
    }
  };
  const fromKernel = (msg, buffers) => {
    if (msg.vaefast === 'response' && msg.view === view) {
      const b = buffers[0];
      const body = b ? b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) : null;
      frame.contentWindow.postMessage({ ...msg, body }, '*');
    } else if (msg.vaefast === 'command') {
      frame.contentWindow.postMessage(JSON.parse(JSON.stringify(msg)), '*'); // plain data
    }
  };
  window.addEventListener('message', fromPage);
  model.on('msg:custom', fromKernel);
  return () => {
    window.removeEventListener('message', fromPage);
    model.off('msg:custom', fromKernel);
  };
}

export default { render };
