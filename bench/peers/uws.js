// uWebSockets.js pub/sub peer for switchboard-bench: a WebSocket at /sub/<topic> subscribes to
// <topic>; POST /pub/<topic> publishes the body to it (one text frame per subscriber).
// Usage: node uws.js PORT (binds 127.0.0.1 only).
const uWS = require('@trufflesuite/uws-js-unofficial');

const port = Number(process.argv[2] || 9001);
const app = uWS.App();

app.ws('/sub/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  maxBackpressure: 1024 * 1024,
  idleTimeout: 120,
  upgrade: (res, req, context) => {
    res.upgrade(
      { topic: req.getUrl().slice('/sub/'.length) },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => ws.subscribe(ws.getUserData().topic),
});

app.post('/pub/*', (res, req) => {
  const topic = req.getUrl().slice('/pub/'.length);
  const chunks = [];
  res.onAborted(() => { res.aborted = true; });
  res.onData((chunk, isLast) => {
    chunks.push(Buffer.from(chunk)); // uWS reuses the chunk's memory after this call
    if (isLast) {
      app.publish(topic, Buffer.concat(chunks), false);
      if (!res.aborted) res.end('ok');
    }
  });
});

app.get('/ready', (res) => { res.end('ok'); });

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
});
