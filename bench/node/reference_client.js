// The seed's reference client (seed 000: npm `websocket`), as written there, driven to send N
// requests at once and match every reply by reference. Exits when all N are answered.
//   node reference_client.js WS_URL KEY N
'use strict';
const [url, key, countText] = process.argv.slice(2);
const count = Number(countText);
const pending = new Map();
let answered = 0;

const my_custom_callback_logic = async ({ comment_id, data }) => {
  if (pending.delete(comment_id)) answered += 1;
  if (answered === count) process.exit(0);
};

const main = async () => {
  var WebSocketClient = require('websocket').client;
  var client = new WebSocketClient();
  var tryRender = async message => {
    try {
      var parse = JSON.parse(message);
      return parse;
    } catch (err) {
      return false;
    }
  };
  client.on('connectFailed', (err) => { console.error(String(err)); process.exit(1); });
  client.on('connect', async connection => {
    connection.on('message', async message => {
      if (message.type === 'utf8') {
        if (typeof message.utf8Data !== 'string') return;
        var render = await tryRender(message.utf8Data);
        if (render === false) return;
        var reference = render.response.metadata.self_reference;
        await my_custom_callback_logic({ comment_id: reference, data: render });
      }
    });
    connection.on('close', function () { if (answered < count) process.exit(1); });
    if (count === 0) process.exit(0);
    for (let i = 0; i < count; i++) {
      const reference = `m-${i}`;
      pending.set(reference, i);
      connection.sendUTF(JSON.stringify({ sample: `hello there number ${i}`, reference }));
    }
  });
  client.connect(url, 'echo-protocol', null, { 'x-chatsight-api-auth': key }, null);
};
main().catch(k => { console.log(k); process.exit(1); });
