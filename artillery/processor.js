// Artillery processor for the Switchboard scripts: registers WebSocket clients over HTTP before
// they connect, counts what they receive and measures delivery and relay latency.
// Counters and histograms appear in Artillery's report under `switchboard.*`.

'use strict';

const apiKey = () => process.env.SWITCHBOARD_API_KEY || 'dev-key';
const wsBase = (target) => target.replace(/^http/, 'ws');

// connect.function of the `clients` scenario: register, then connect to the ws_url returned.
async function registerClient(wsArgs, context, done) {
  try {
    const response = await fetch(`${context.vars.target}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey() },
      body: '{}',
    });
    if (response.status !== 201) {
      return done(new Error(`register answered ${response.status}`));
    }
    const registered = await response.json();
    context.vars.clientId = registered.id;
    wsArgs.target = registered.ws_url;
    return done();
  } catch (err) {
    return done(err);
  }
}

// Counts every published message a client receives and its publish-to-receive latency (the
// publisher stamps `sent_ms` into each message, see stampMessage).
function countMessages(context, events, done) {
  context.ws.on('message', (data) => {
    let frame;
    try {
      frame = JSON.parse(data.toString());
    } catch (err) {
      events.emit('counter', 'switchboard.unparsable_frames', 1);
      return;
    }
    if (frame.type === 'message') {
      events.emit('counter', 'switchboard.messages_received', 1);
      if (frame.data && typeof frame.data.sent_ms === 'number') {
        events.emit('histogram', 'switchboard.delivery_latency_ms', Date.now() - frame.data.sent_ms);
      }
    } else if (frame.type === 'error') {
      events.emit('counter', `switchboard.error.${frame.error}`, 1);
    }
  });
  return done();
}

// beforeRequest hook of the publisher: a fresh timestamp in every published message.
function stampMessage(requestParams, context, events, next) {
  requestParams.json = { message: { sent_ms: Date.now(), text: 'hello from artillery' } };
  return next();
}

// Unregisters the client a `clients` scenario registered (its socket is then closed, 4001).
// Artillery awaits an async step function (and passes it no callback).
async function unregisterClient(context, events) {
  if (context.vars.clientId) {
    await fetch(`${context.vars.target}/register/${context.vars.clientId}`, { method: 'DELETE' })
      .catch(() => events.emit('counter', 'switchboard.unregister_failed', 1));
  }
}

// connect.function of the `relay` scenario: consecutive virtual users share an id, so they pair.
let relayPeers = 0;
function relayPeer(wsArgs, context, done) {
  const pair = Math.floor(relayPeers++ / 2);
  wsArgs.target = `${wsBase(context.vars.target)}/relay/artillery-${process.pid}-${pair}`;
  return done();
}

// Echoes the partner's pings and measures the round trip of our own.
function relayEcho(context, events, done) {
  context.ws.on('message', (data) => {
    const text = data.toString();
    if (text.startsWith('ping:')) {
      context.ws.send(`pong:${text.slice(5)}`);
    } else if (text.startsWith('pong:')) {
      events.emit('histogram', 'switchboard.relay_rtt_ms', Date.now() - Number(text.slice(5)));
      events.emit('counter', 'switchboard.relay_round_trips', 1);
    } else if (text.startsWith('/status:connected')) {
      context.vars.paired = true;
    } else if (text.startsWith('/remote:close')) {
      context.vars.paired = false;
    } else if (text.startsWith('/error:')) {
      events.emit('counter', 'switchboard.relay_errors', 1);
    }
  });
  return done();
}

// Sends a ping once paired (a peer still waiting for its partner would get error 0001).
function relayPing(context, events, done) {
  if (context.vars.paired) {
    context.ws.send(`ping:${Date.now()}`);
  }
  return done();
}

module.exports = {
  registerClient,
  countMessages,
  stampMessage,
  unregisterClient,
  relayPeer,
  relayEcho,
  relayPing,
};
