// The demo's workload: one small HTTP service per pod, run inside the pod's network namespace
// (plain JavaScript, no loader, so a pod starts fast and stays small). It plays one bookinfo or
// zone-scenario service, listening on loopback only (the sidecar in front of it is the pod's
// door), and calls its peers by address and port as bookinfo's services call each other: it
// knows nothing of the mesh; the interception rules the agent installs in the pod send its
// connections through the sidecar. It also takes orders from the demo on stdin (one JSON object
// a line) and answers on stdout, so every probe of the scenario is made from inside the pod:
//   {"id":1,"op":"http","url":"http://10.244.0.5:9080/ratings/0","method":"GET"}
//   {"id":2,"op":"http","url":"https://10.244.0.5:9080/ratings/0","tls":{"cert":..,"key":..}}
//   {"id":3,"op":"tcp","host":"10.244.0.5","port":9080,"timeoutMs":400}
//   {"id":4,"op":"poll","url":...,"deadlineMs":5000}  (first success time)
// Configuration (JSON) is argv[2]: {"name","role","appPort","peers":{"role":"ip"}}.
// Owns: the services' behaviour and the probe client. Must never: listen on the pod's address.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import readline from 'node:readline';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const POD_PORT = 9080;

/** One HTTP call to the peer's address (plain HTTP, or TLS with a certificate it holds). */
function call({ url, method = 'GET', tls, timeoutMs = 3000 }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const u = new URL(url);
    let req;
    let answered = false;
    const done = (r) => {
      if (answered) return;
      answered = true;
      resolve({ ms: Date.now() - started, ...r });
    };
    const onResponse = (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () =>
        done({ ok: true, status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', (e) => done({ ok: false, error: e.code ?? e.message }));
    };
    if (u.protocol === 'https:') {
      // The attacker's client: it presents whatever certificate it holds and trusts anything.
      req = https.request(
        {
          host: u.hostname,
          port: Number(u.port || 443),
          method,
          path: `${u.pathname}${u.search}`,
          cert: tls?.cert,
          key: tls?.key,
          rejectUnauthorized: false,
          agent: false,
        },
        onResponse,
      );
    } else {
      req = http.request(
        {
          host: u.hostname,
          port: Number(u.port || 80),
          method,
          path: `${u.pathname}${u.search}`,
          agent: false,
        },
        onResponse,
      );
    }
    // One deadline for the whole call, connect and TLS handshake included.
    const timer = setTimeout(() => {
      done({ ok: false, error: 'ETIMEDOUT' });
      req.destroy();
    }, timeoutMs);
    req.on('close', () => clearTimeout(timer));
    req.on('error', (e) => done({ ok: false, error: e.code ?? e.message }));
    req.end(method === 'POST' || method === 'PUT' ? '{"stars":5}' : undefined);
  });
}

function tcp({ host, port, timeoutMs = 400 }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, error: 'timeout', ms: Date.now() - started });
    }, timeoutMs);
    s.on('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve({ ok: true, ms: Date.now() - started });
    });
    s.on('error', (e) => {
      clearTimeout(t);
      resolve({ ok: false, error: e.code ?? e.message, ms: Date.now() - started });
    });
  });
}

/**
 * The firewall-change probe: a TCP attempt every intervalMs (each abandoned after
 * attemptTimeoutMs, so no retransmitted SYN outlives it) until the kernel lets one through,
 * then HTTP until it answers 2xx (the L7 points have the change too).
 * Reports the wall time of each stage.
 */
function poll({ host, port, url, intervalMs = 20, attemptTimeoutMs = 150, deadlineMs = 5000 }) {
  return new Promise((resolve) => {
    const started = Date.now();
    let attempts = 0;
    let tcpAt;
    let finished = false;
    let httpBusy = false;
    const finish = (r) => {
      finished = true;
      clearInterval(timer);
      resolve({ attempts, tcpAt, ...r });
    };
    const timer = setInterval(() => {
      if (finished) return;
      if (Date.now() - started > deadlineMs) return finish({ ok: false, error: 'deadline' });
      if (tcpAt === undefined) {
        attempts += 1;
        void tcp({ host, port, timeoutMs: attemptTimeoutMs }).then((r) => {
          if (r.ok && tcpAt === undefined) tcpAt = Date.now();
        });
        return;
      }
      if (httpBusy) return;
      httpBusy = true;
      void call({ url, timeoutMs: 1000 }).then((r) => {
        httpBusy = false;
        if (!finished && r.ok && r.status >= 200 && r.status < 300)
          finish({ ok: true, okAt: Date.now(), status: r.status });
      });
    }, intervalMs);
  });
}

const peer = (role) => cfg.peers?.[role];
const json = (res, status, v) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(v));
};
const upstream = async (role, path) => {
  const ip = peer(role);
  if (!ip) return { error: `no ${role} peer` };
  // Generous: on a loaded machine a chain of mTLS hops can take seconds.
  const r = await call({ url: `http://${ip}:${POD_PORT}${path}`, timeoutMs: 8000 });
  if (!r.ok) return { error: r.error };
  let body = r.body;
  try {
    body = JSON.parse(r.body);
  } catch {
    // a refusal is text
  }
  return { status: r.status, body };
};

/** The services, as bookinfo's: productpage aggregates details and every reviews version. */
async function serve(req, res) {
  const url = new URL(req.url ?? '/', 'http://pod');
  const identity = req.headers['x-palisade-peer-identity'] ?? null;
  const base = { service: cfg.name, method: req.method, path: url.pathname, caller: identity };
  switch (cfg.role) {
    case 'ingress':
      return json(res, 200, {
        ...base,
        productpage: await upstream('productpage', '/productpage'),
      });
    case 'productpage': {
      const [details, v1, v2, v3] = await Promise.all([
        upstream('details', '/details/0'),
        upstream('reviews-v1', '/reviews/0'),
        upstream('reviews-v2', '/reviews/0'),
        upstream('reviews-v3', '/reviews/0'),
      ]);
      return json(res, 200, { ...base, details, reviews: { v1, v2, v3 } });
    }
    case 'reviews-v1':
      return json(res, 200, {
        ...base,
        reviews: ['An extremely entertaining play by Shakespeare.'],
      });
    case 'reviews-v2':
    case 'reviews-v3':
      return json(res, 200, {
        ...base,
        reviews: ['An extremely entertaining play by Shakespeare.'],
        stars: cfg.role === 'reviews-v2' ? 'black' : 'red',
        ratings: await upstream('ratings', '/ratings/0'),
      });
    case 'details':
      return json(res, 200, { ...base, details: { pages: 200, publisher: 'PublisherA' } });
    case 'ratings':
      return json(
        res,
        200,
        req.method === 'GET'
          ? { ...base, ratings: { Reviewer1: 5, Reviewer2: 4 } }
          : { ...base, updated: true },
      );
    default:
      return json(res, 200, base);
  }
}

const server = http.createServer((req, res) => {
  req.resume();
  serve(req, res).catch((e) => json(res, 500, { error: String(e) }));
});
// Longer than the sidecar's pooled connections live, so the sidecar never reuses a connection
// this server is closing (Node's default of 5 s would race it).
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.listen(cfg.appPort, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let m;
  try {
    m = JSON.parse(line);
  } catch {
    return;
  }
  const reply = (r) => process.stdout.write(`${JSON.stringify({ id: m.id, ...r })}\n`);
  const op =
    m.op === 'http'
      ? call(m)
      : m.op === 'tcp'
        ? tcp(m)
        : m.op === 'poll'
          ? poll(m)
          : Promise.resolve({ ok: false, error: 'unknown op' });
  void op.then(reply);
});
process.stdin.on('end', () => process.exit(0));
