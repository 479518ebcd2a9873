// Fluent forward with @fluent-org/logger, the maintained Node.js client:
//   node client.mjs HOST PORT KEY RUN COUNT [SHARED_KEY]
// Sends COUNT events in each event mode (Message, Forward, PackedForward,
// CompressedPackedForward) with acknowledgements required, so that every
// emit() resolves only when the server has acknowledged its chunk; with
// SHARED_KEY, each connection passes the HELO/PING/PONG handshake first.
// Prints JSON: per mode, "acked" or the error (no ack within 8 s: a
// refused handshake).
import { FluentClient, EventTime } from "@fluent-org/logger";

const [host, port, key, run, count, sharedKey] = process.argv.slice(2);
const modes = ["Message", "Forward", "PackedForward", "CompressedPackedForward"];
const results = {};
for (const eventMode of modes) {
  const client = new FluentClient("app", {
    eventMode,
    socket: { host, port: Number(port), timeout: 10000, reconnect: { maxDelay: 500 } },
    ack: { ackTimeout: 10000 },
    flushInterval: 5,
    ...(sharedKey ? { security: { clientHostname: "fluent-node", sharedKey } } : {}),
  });
  try {
    const sent = [];
    for (let i = 0; i < Number(count); i++) {
      sent.push(
        client.emit(
          eventMode.toLowerCase(),
          { log: `${eventMode} event ${i} of ${run}`, level: "warn", securenet_key: key, run, i },
          new EventTime(1795687200 + i, 125000000),
        ),
      );
    }
    // A refused handshake leaves the emits pending: give up after 8 s.
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("no ack within 8 s")), 8000);
    });
    try {
      await Promise.race([Promise.all(sent), timeout]);
    } finally {
      clearTimeout(timer);
    }
    results[eventMode] = "acked";
  } catch (err) {
    results[eventMode] = String(err && err.message ? err.message : err);
  }
  await Promise.race([
    client.disconnect().catch(() => {}),
    new Promise((resolve) => setTimeout(resolve, 1000)),
  ]);
}
console.log(JSON.stringify(results));
