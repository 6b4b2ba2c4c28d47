// node `ws` pub/sub peer for switchboard-bench: a WebSocket at /sub/<topic> subscribes to
// <topic>; POST /pub/<topic> sends the body to every subscriber, the way ws's README broadcasts.
// Usage: node ws.js PORT (binds 127.0.0.1 only).
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9002);
const topics = new Map();
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/pub/')) {
    const topic = req.url.slice('/pub/'.length);
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      for (const ws of topics.get(topic) || []) ws.send(body, { binary: false });
      res.end('ok');
    });
  } else if (req.url === '/ready') {
    res.end('ok');
  } else {
    res.statusCode = 404;
    res.end();
  }
});

server.on('upgrade', (req, socket, head) => {
  if (!req.url.startsWith('/sub/')) {
    socket.destroy();
    return;
  }
  const topic = req.url.slice('/sub/'.length);
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (!topics.has(topic)) topics.set(topic, new Set());
    topics.get(topic).add(ws);
    ws.on('close', () => topics.get(topic).delete(ws));
  });
});

server.listen(port, '127.0.0.1');
