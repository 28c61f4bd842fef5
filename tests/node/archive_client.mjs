// A phone as the VMS apps build it: stock pusher-js and Laravel Echo, configured from the
// service's own GET /api/v1/wsurl answer, authorised by the real /broadcasting/auth with the
// device's bearer token. When the archive is announced, pusher-js's side downloads it with
// node's fetch. Driven by tests/archive/test_pusherjs_e2e.py: one JSON object per line on
// stdout, one command per line on stdin ("quit").
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import readline from 'node:readline';

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

const config = JSON.parse(process.env.ARCHIVE_TEST_CONFIG);
const wsurl = config.wsurl; // the body of GET /api/v1/wsurl, as the service answered it
const EVENT = 'App\\Events\\TokenPush';

function say(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

const headers = {
  Authorization: `Bearer ${config.token}`,
  'X-Client': config.xClient,
  'X-UUID': config.uuid,
};

const connection = {
  wsHost: wsurl.host,
  wsPort: wsurl.port,
  wsPath: wsurl.path,
  forceTLS: wsurl.is_encrypted,
  enabledTransports: ['ws'],
  cluster: 'mt1',
  disableStats: true,
};

function errorCode(error) {
  const data = error && error.error && error.error.data ? error.error.data : error && error.data;
  return data ? data.code : null;
}

function watch(name, socket) {
  socket.connection.bind('state_change', (states) => {
    say({ client: name, type: 'state', previous: states.previous, current: states.current });
  });
  socket.connection.bind('error', (error) => {
    say({ client: name, type: 'error', code: errorCode(error) });
  });
}

async function download(url) {
  const response = await fetch(url);
  const body = Buffer.from(await response.arrayBuffer());
  await writeFile(config.savePath, body);
  say({
    client: 'pusher',
    type: 'download',
    status: response.status,
    contentType: response.headers.get('content-type'),
    size: body.length,
    head: body.subarray(0, 16).toString('hex'),
    sha256: createHash('sha256').update(body).digest('hex'),
  });
}

const channel = `private-token.${config.accessTokenId}`;

const pusher = new Pusher(wsurl.app_key, {
  ...connection,
  channelAuthorization: { endpoint: config.authEndpoint, transport: 'ajax', headers },
});
watch('pusher', pusher);
pusher.connection.bind('connected', () => {
  say({ client: 'pusher', type: 'connected', socket_id: pusher.connection.socket_id });
});
const token = pusher.subscribe(channel);
token.bind('pusher:subscription_succeeded', () => {
  say({ client: 'pusher', type: 'subscribed', channel });
});
token.bind('pusher:subscription_error', (error) => {
  say({ client: 'pusher', type: 'subscription_error', channel, error });
});
token.bind(EVENT, (data) => {
  say({ client: 'pusher', type: 'event', channel, data });
  if (data.type === 'archive_generated' && data.status === 'ok') {
    download(data.data.download.url).catch((error) => {
      say({ client: 'pusher', type: 'download_error', message: String(error) });
    });
  }
});

// Laravel Echo with its Pusher connector, listening exactly as the apps do.
const echo = new Echo({
  broadcaster: 'pusher',
  key: wsurl.app_key,
  ...connection,
  Pusher,
  authEndpoint: config.authEndpoint,
  auth: { headers },
});
watch('echo', echo.connector.pusher);
echo
  .private(`token.${config.accessTokenId}`)
  .subscribed(() => say({ client: 'echo', type: 'subscribed', channel }))
  .error((error) => say({ client: 'echo', type: 'subscription_error', error }))
  .listen(`.${EVENT}`, (data) => say({ client: 'echo', type: 'event', channel, data }));

const commands = readline.createInterface({ input: process.stdin });
commands.on('line', (line) => {
  if (line.trim() === 'quit') {
    commands.close();
  }
});
commands.on('close', () => {
  pusher.disconnect();
  echo.disconnect();
  setTimeout(() => process.exit(0), 50);
});
