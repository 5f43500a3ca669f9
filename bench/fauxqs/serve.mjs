// fauxqs on 127.0.0.1 only (its CLI binds every interface), on the port given (0: any free one).
// Prints the URL on its first line of output.
//
// `node serve.mjs PORT [DELAY_MS]`: every API request waits DELAY_MS before it is answered (a
// region's round trip, here in the server so the client pays no CPU for it). GET
// /_bench/stats answers {requests, seconds, peak, mean}: API requests since the last
// GET /_bench/reset (and by operation), and how many were being answered at once (peak, and the time-weighted
// mean over the seconds since the reset).
import { buildApp } from "fauxqs";
// The queue class itself (not in the package's exports: the same module file app.js loads).
import { SqsQueue } from "./node_modules/fauxqs/dist/sqs/sqsStore.js";

// fauxqs looks through every in-flight message for an ended hold on every receive: reading a
// queue of a million messages held by the reader costs a million steps a receive. With more
// than 10,000 in flight, looked at once per 100 ms per queue instead (a hold that ended comes
// back up to 0.1 s late; SQS's own visibility is approximate, and a release to visibility 0
// is immediate either way).
const processTimers = SqsQueue.prototype.processTimers;
SqsQueue.prototype.processTimers = function () {
  const now = Date.now();
  const many = this.inflightMessages.size > 10000;
  if (many && this.timersAt !== undefined && now - this.timersAt < 100) return;
  this.timersAt = now;
  processTimers.call(this);
};

const delay = Number(process.argv[3] ?? 0);
const app = buildApp({ logger: false });

// Its own endpoints (/_bench, /_fauxqs inspection) are neither delayed nor counted.
const bench = (url) => url.startsWith("/_");
let inFlight = 0, peak = 0, requests = 0, area = 0, operations = {};
let since = performance.now(), stamp = since;
const tick = () => {
  const now = performance.now();
  area += inFlight * (now - stamp);
  stamp = now;
};

app.addHook("onRequest", (request, reply, done) => {
  if (bench(request.url)) return done();
  tick();
  inFlight += 1;
  // A request ends when its response closes: answered, or abandoned by its client (the long
  // poll of a tool that stopped).
  reply.raw.once("close", () => {
    tick();
    inFlight -= 1;
  });
  requests += 1;
  const operation = String(request.headers["x-amz-target"] ?? "other").split(".").pop();
  operations[operation] = (operations[operation] ?? 0) + 1;
  peak = Math.max(peak, inFlight);
  if (delay > 0) setTimeout(done, delay);
  else done();
});
app.get("/_bench/reset", async () => {
  tick();
  peak = inFlight;
  requests = 0;
  operations = {};
  area = 0;
  since = stamp;
  return {};
});
app.get("/_bench/stats", async () => {
  tick();
  const seconds = (stamp - since) / 1000;
  const mean = seconds > 0 ? area / 1000 / seconds : 0;
  return { requests, operations, seconds, peak, mean };
});

const address = await app.listen({ port: Number(process.argv[2] ?? 0), host: "127.0.0.1" });
console.log(address);
