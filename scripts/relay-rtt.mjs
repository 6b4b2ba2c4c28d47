// Hand measurement of relay round trips (README "Relay mode"). Needs node >= 20.10.
// Relay round trips: P pairs, each pair echoes N messages one at a time; prints RTT percentiles.
// usage: node --experimental-websocket scripts/relay-rtt.mjs URL_A URL_B PAIRS ROUNDS
// (peer A of each pair on URL_A, peer B on URL_B: two nodes sharing Redis measure the cross-node hop)
const [urlA, urlB, pairs = 10, rounds = 1000] = process.argv.slice(2);
const open = (url) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.onopen = () => resolve(ws);
  ws.onerror = reject;
});
const next = (ws) => new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
async function pair(i) {
  const id = `rtt-${process.pid}-${i}`;
  const a = await open(`${urlA}/relay/${id}`);
  await next(a); // waiting
  const aPaired = new Promise((r) => { let n = 0; a.onmessage = () => { if (++n === 2) r(); }; });
  const b = await open(`${urlB}/relay/${id}`);
  await next(b); // connected
  await aPaired;
  b.onmessage = (e) => b.send(e.data); // echo
  const rtts = [];
  for (let k = 0; k < Number(rounds); k++) {
    const t = performance.now();
    const reply = next(a);
    a.send(`m${k}`);
    if ((await reply) !== `m${k}`) throw new Error("out of order");
    rtts.push(performance.now() - t);
  }
  a.close(); b.close();
  return rtts;
}
const started = performance.now();
const all = (await Promise.all([...Array(Number(pairs)).keys()].map(pair))).flat().sort((x, y) => x - y);
const secs = (performance.now() - started) / 1000;
const p = (q) => all[Math.min(all.length - 1, Math.floor(q * all.length))].toFixed(3);
console.log(`pairs=${pairs} round_trips=${all.length} in ${secs.toFixed(2)}s = ${(all.length / secs).toFixed(0)}/s  rtt ms p50=${p(0.5)} p90=${p(0.9)} p99=${p(0.99)} max=${all[all.length - 1].toFixed(3)}`);
