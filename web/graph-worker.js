// The fused graph in a worker thread: messages {type: 'load', bytes, wasmPaths, threads} then
// {type: 'run', id, face}; runs one at a time, in the order they came.

import { loadGraph } from './graph.js';

let graph = null;
let queue = Promise.resolve();

self.onmessage = ({ data }) => {
  queue = queue.then(async () => {
    try {
      if (data.type === 'load') {
        graph = await loadGraph(data.bytes, data.wasmPaths, data.threads);
        self.postMessage({ type: 'loaded', id: data.id, inputNames: graph.inputNames });
      } else {
        self.postMessage({ type: 'result', id: data.id, ...(await graph.run(data.face)) });
      }
    } catch (e) {
      self.postMessage({ type: 'error', id: data.id, message: String(e?.message ?? e) });
    }
  });
};
