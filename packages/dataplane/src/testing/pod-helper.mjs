// A tiny process that runs inside a test pod's network namespace: TCP and UDP echo servers on the
// ports given as arguments (t80 u53 ...), and a client driven by JSON lines on stdin:
//   {"id":1,"op":"tcp","host":"10.9.0.3","port":80,"timeout":800}   -> {"id":1,"ok":true}
//   {"id":2,"op":"udp","host":"10.9.0.3","port":53,"timeout":800}
//   {"id":3,"op":"open","host":"10.9.0.3","port":80,"timeout":800}  (a long-lived stream, key id)
//   {"id":4,"op":"ping","stream":3,"timeout":800}                    (a line through the stream)
// Test support only: never part of the product.
import net from 'node:net';
import dgram from 'node:dgram';
import readline from 'node:readline';

for (const spec of process.argv.slice(2)) {
  const port = Number(spec.slice(1));
  if (spec.startsWith('t')) {
    net
      .createServer((s) => {
        s.on('error', () => undefined);
        s.pipe(s);
      })
      .listen(port, '0.0.0.0');
  } else if (spec.startsWith('u')) {
    const sock = dgram.createSocket('udp4');
    sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
    sock.bind(port, '0.0.0.0');
  }
}

const streams = new Map();
const reply = (id, ok, extra = {}) =>
  process.stdout.write(JSON.stringify({ id, ok, ...extra }) + '\n');

function tcp(req, keep) {
  const s = net.connect({ host: req.host, port: req.port });
  let done = false;
  const finish = (ok, why) => {
    if (done) return;
    done = true;
    clearTimeout(t);
    if (ok && keep) {
      streams.set(req.id, s);
      s.on('error', () => undefined);
    } else s.destroy();
    reply(req.id, ok, why ? { why } : {});
  };
  const t = setTimeout(() => finish(false, 'timeout'), req.timeout ?? 800);
  s.on('connect', () => finish(true));
  s.on('error', (e) => finish(false, e.code));
}

function udp(req) {
  const sock = dgram.createSocket('udp4');
  let done = false;
  const finish = (ok, why) => {
    if (done) return;
    done = true;
    clearTimeout(t);
    sock.close();
    reply(req.id, ok, why ? { why } : {});
  };
  const t = setTimeout(() => finish(false, 'timeout'), req.timeout ?? 800);
  sock.on('message', () => finish(true));
  sock.on('error', (e) => finish(false, e.code));
  sock.send(Buffer.from('ping'), req.port, req.host);
}

function ping(req) {
  const s = streams.get(req.stream);
  if (!s || s.destroyed) return reply(req.id, false, { why: 'no stream' });
  const token = `p${req.id}\n`;
  let buf = '';
  const onData = (d) => {
    buf += d.toString();
    if (buf.includes(token)) finish(true);
  };
  let done = false;
  const finish = (ok, why) => {
    if (done) return;
    done = true;
    clearTimeout(t);
    s.off('data', onData);
    reply(req.id, ok, why ? { why } : {});
  };
  const t = setTimeout(() => finish(false, 'timeout'), req.timeout ?? 800);
  s.on('data', onData);
  s.write(token);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const req = JSON.parse(line);
  if (req.op === 'tcp') tcp(req, false);
  else if (req.op === 'open') tcp(req, true);
  else if (req.op === 'udp') udp(req);
  else if (req.op === 'ping') ping(req);
  else reply(req.id, false, { why: 'unknown op' });
});
process.stdin.on('end', () => process.exit(0));
setTimeout(() => process.stdout.write(JSON.stringify({ ready: true }) + '\n'), 100);
