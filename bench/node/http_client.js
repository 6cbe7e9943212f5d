// A plain Node keep-alive HTTP client: N moderation requests, 32 at once (by default), on one
// keep-alive agent. Exits 0 when every request got a 200 with a readable reply.
//   node http_client.js HTTP_URL KEY N [CONCURRENCY]
'use strict';
const http = require('http');
const [base, key, countText, concurrencyText] = process.argv.slice(2);
const count = Number(countText);
const concurrency = Number(concurrencyText || 32);
const target = new URL('/text/moderation', base);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
let next = 0;
let answered = 0;

function one() {
  if (next >= count) return;
  const i = next++;
  const payload = JSON.stringify({ sample: `hello there number ${i}` });
  const req = http.request({
    agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST',
    headers: { 'x-chatsight-api-auth': key, 'content-type': 'application/json',
               'content-length': Buffer.byteLength(payload) },
  }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => {
      if (res.statusCode !== 200) { console.error(`HTTP ${res.statusCode}`); process.exit(1); }
      JSON.parse(Buffer.concat(chunks)).response.suggestedAction;
      answered += 1;
      if (answered === count) process.exit(0);
      one();
    });
  });
  req.on('error', (e) => { console.error(String(e)); process.exit(1); });
  req.end(payload);
}
if (count === 0) process.exit(0);
for (let k = 0; k < concurrency; k++) one();
