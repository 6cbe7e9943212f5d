// Bench-only loopback stand-in for Chatsight: answers every request at once, in the reply
// shape of the Chatsight documents (the same body as chatmod's sandbox), on a websocket (npm
// `ws`) and on HTTP POST /text/moderation (Node's http, keep-alive). Prints its ports as one
// JSON line on stdout, then serves until killed.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const KEY = process.argv[2] || 'bench-key';
// With a second argument N > 0, every websocket is cut (no close frame, no FIN: a reset, as
// Chatsight does) every N milliseconds: the HTTP fallback's latency scenario.
const CUT_EVERY_MS = Number(process.argv[3] || 0);
const body = (reference) => ({
  api: 'chatsight-lang-text', success: true,
  response: {
    engine1: { raceInvocation: 0.0001, politicalLanguage: 0.0026, baseline: 0.9 },
    engine2: { raceInvocation: 0.00004, defensive: 0.0001, baseline: 'Not required in engine2',
               aggressive: 0.00005, vulgar: 0.1 },
    engine3: { invoked: false },
    suggestedAction: ['pass', 0.1],
    patches: { extremistFormattingPatch: false, curseWordOverride: false, sentimentScore: 0.1 },
    insights: { dialectPrediction: ['english', 0.37] },
    metadata: { modelTrainingWords: [], computeTime: 1, times: [0.4, 0.2],
                uuid: 'Future Placeholder', warningIssued: false, endpoint: 'bench',
                alloc: 'bench', latencyAlert: false, self_reference: reference },
  },
  TOS: 'https://announce.chatsight.ai/terms_of_service', version: 'bench',
});
// The reply is a template with the reference spliced in: the server must never be the
// bottleneck, so it does no more per message than parse the request and copy bytes.
const MARK = '\u0000REF\u0000';
const [HEAD, TAIL] = JSON.stringify(body(MARK)).split(JSON.stringify(MARK));
const HTTP_REPLY = Buffer.from(JSON.stringify(body(undefined)));

const httpServer = http.createServer({ keepAliveTimeout: 60000 }, (req, res) => {
  if (req.method !== 'POST' || req.url !== '/text/moderation') {
    res.writeHead(404).end();
    return;
  }
  if (req.headers['x-chatsight-api-auth'] !== KEY) {
    res.writeHead(401).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    try { JSON.parse(Buffer.concat(chunks)); } catch (e) { res.writeHead(400).end(); return; }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': HTTP_REPLY.length });
    res.end(HTTP_REPLY);
  });
});

const wsServer = new WebSocketServer({
  server: undefined, noServer: true, perMessageDeflate: false,
});
const wsHttp = http.createServer((req, res) => res.writeHead(426).end());
wsHttp.on('upgrade', (req, socket, head) => {
  if (req.headers['x-chatsight-api-auth'] !== KEY) {
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  wsServer.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data) => {
      let request;
      try { request = JSON.parse(data); } catch (e) { return; }
      ws.send(HEAD + JSON.stringify(request.reference) + TAIL);
    });
  });
});

if (CUT_EVERY_MS > 0) {
  setInterval(() => {
    for (const ws of wsServer.clients) ws._socket.resetAndDestroy();
  }, CUT_EVERY_MS);
}

httpServer.listen(0, '127.0.0.1', () => {
  wsHttp.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({
      ws_port: wsHttp.address().port, http_port: httpServer.address().port }) + '\n');
  });
});
