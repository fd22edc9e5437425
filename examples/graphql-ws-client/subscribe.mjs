// An independent check on examples/fanout_bench.rs: N subscribers through the
// reference `graphql-ws` client (not our own), each counting the check-ins it
// receives and timing each from its `checkedInAt` (the bench's sightings are
// seen "now", on this same machine's clock) to its arrival.
//
//   npm install && node subscribe.mjs URL TOKEN EVENT N SECONDS
//
// Run it while `fanout_bench --pause-secs S` waits (it prints URL, TOKEN and
// EVENT). Prints one line: `graphql-ws: subscribers <N>, connected <C>,
// check-ins <K>, received <R>, latency p50 <ms> p99 <ms> max <ms>, errors <E>`.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, token, event, n, seconds] = process.argv.slice(2);
const count = Number(n);
const query = 'subscription($e: ID!) { checkIns(eventId: $e) { cursor checkedInAt user { name } } }';
// Milliseconds from each check-in to its arrival, and the check-ins seen.
const latencies = [];
const cursors = new Set();
let received = 0;
let errors = 0;
let connected = 0;

for (let i = 0; i < count; i++) {
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    lazy: false,
    on: { connected: () => { connected++; } },
  });
  client.subscribe({ query, variables: { e: event } }, {
    next: (msg) => {
      const cursor = msg?.data?.checkIns?.cursor;
      if (!cursor) { errors++; return; }
      received++;
      cursors.add(cursor);
      latencies.push(Date.now() - Date.parse(msg.data.checkIns.checkedInAt));
    },
    error: () => { errors++; },
    complete: () => {},
  });
  if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20));
}
console.error(`opened ${count} clients`);
await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
latencies.sort((x, y) => x - y);
const pct = (p) => (latencies.length ? latencies[Math.round((latencies.length - 1) * p)].toFixed(0) : '0');
console.log(`graphql-ws: subscribers ${count}, connected ${connected}, check-ins ${cursors.size}, received ${received}, ` +
  `latency p50 ${pct(0.5)} ms p99 ${pct(0.99)} ms max ${pct(1)} ms, errors ${errors}`);
process.exit(0);
