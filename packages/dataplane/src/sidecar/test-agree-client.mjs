// Test support only (never part of the product): an HTTP client inside a pod's network namespace
// for agreement-netns.test.ts. Each stdin line
//   {"id":1,"host":"10.9.0.2","port":8080,"method":"GET","path":"/a","cert":PEM|null,"key":PEM|null,"ca":PEM}
// is sent on a new connection (mTLS with the given certificate, or plaintext when cert is null),
// and answered with {"id":1,"status":200,"body":"..."} or {"id":1,"error":"..."}.
// The server's chain is verified against the trust bundle; its name is not (the sidecar under
// test is the server, not the client).
import http from 'node:http';
import https from 'node:https';
import readline from 'node:readline';

const reply = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function send(r) {
  const opts = {
    host: r.host,
    port: r.port,
    method: r.method,
    path: r.path,
    agent: false,
    timeout: 10_000,
    headers: { connection: 'close' },
  };
  const req = r.cert
    ? https.request({
        ...opts,
        cert: r.cert,
        key: r.key,
        ca: r.ca,
        rejectUnauthorized: true,
        checkServerIdentity: () => undefined,
      })
    : http.request(opts);
  req.on('response', (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () =>
      reply({ id: r.id, status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }),
    );
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => reply({ id: r.id, error: String(e.code ?? e.message) }));
  req.end();
}

reply({ ready: true });
readline.createInterface({ input: process.stdin }).on('line', (line) => send(JSON.parse(line)));
