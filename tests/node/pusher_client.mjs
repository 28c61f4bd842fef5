// A stock pusher-js client and a Laravel Echo client, configured as the VMS apps configure
// them, driven by tests/push/test_pusherjs.py. It prints one JSON object per line on stdout
// and takes one command per line on stdin: "ping", "quit".
import readline from 'node:readline';

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

const config = JSON.parse(process.env.PUSH_TEST_CONFIG);

function say(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

const connection = {
  wsHost: config.host,
  wsPort: config.port,
  wsPath: '/ws',
  forceTLS: false,
  enabledTransports: ['ws'],
  cluster: 'mt1',
  disableStats: true,
};

const pusher = new Pusher(config.key, {
  ...connection,
  channelAuthorization: {
    endpoint: config.authEndpoint,
    transport: 'ajax',
    headers: { Authorization: 'Bearer pusher-js' },
  },
});

pusher.connection.bind('state_change', (states) => {
  say({ client: 'pusher', type: 'state', previous: states.previous, current: states.current });
});
pusher.connection.bind('connected', () => {
  say({ client: 'pusher', type: 'connected', socket_id: pusher.connection.socket_id });
});
pusher.connection.bind('error', (error) => {
  const data = error && error.error && error.error.data ? error.error.data : error && error.data;
  say({ client: 'pusher', type: 'error', code: data ? data.code : null });
});
pusher.bind('pusher:pong', () => say({ client: 'pusher', type: 'pong' }));

const token = pusher.subscribe(config.channel);
token.bind('pusher:subscription_succeeded', () => {
  say({ client: 'pusher', type: 'subscribed', channel: config.channel });
});
token.bind(config.event, (data) => {
  say({ client: 'pusher', type: 'event', channel: config.channel, data });
});

const forged = pusher.subscribe(config.forgedChannel);
forged.bind('pusher:subscription_error', (error) => {
  say({ client: 'pusher', type: 'subscription_error', channel: config.forgedChannel, error });
});
forged.bind('pusher:subscription_succeeded', () => {
  say({ client: 'pusher', type: 'subscribed', channel: config.forgedChannel });
});

// A client with an app key the server does not know: refused during the handshake.
const stranger = new Pusher(`${config.key}-unknown`, connection);
stranger.connection.bind('error', (error) => {
  const data = error && error.error && error.error.data ? error.error.data : error && error.data;
  say({ client: 'stranger', type: 'error', code: data ? data.code : null });
});
stranger.connection.bind('state_change', (states) => {
  say({ client: 'stranger', type: 'state', previous: states.previous, current: states.current });
});

// Laravel Echo with its Pusher connector, listening the way the VMS apps do.
const echo = new Echo({
  broadcaster: 'pusher',
  key: config.key,
  ...connection,
  Pusher,
  authEndpoint: config.authEndpoint,
  auth: { headers: { Authorization: 'Bearer laravel-echo' } },
});
const echoChannel = config.channel.replace(/^private-/, '');
echo
  .private(echoChannel)
  .subscribed(() => say({ client: 'echo', type: 'subscribed', channel: config.channel }))
  .error((error) => say({ client: 'echo', type: 'subscription_error', error }))
  .listen(`.${config.event}`, (data) => {
    say({ client: 'echo', type: 'event', channel: config.channel, data });
  });

const commands = readline.createInterface({ input: process.stdin });
commands.on('line', (line) => {
  const command = line.trim();
  if (command === 'ping') {
    pusher.connection.send_event('pusher:ping', {});
  } else if (command === 'quit') {
    pusher.disconnect();
    echo.disconnect();
    commands.close();
    setTimeout(() => process.exit(0), 50);
  }
});
commands.on('close', () => {
  setTimeout(() => process.exit(0), 50);
});
