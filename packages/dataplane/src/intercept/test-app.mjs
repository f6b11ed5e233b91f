// Test support: an unmodified HTTP application for agent-netns.test.ts, on 0.0.0.0:<port> inside
// a pod's namespace. It answers with what it received (method, path, the client certificate
// header the sidecar adds, the peer address) and prints one line per request it served.
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? '9080');
const app = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    process.stdout.write(`${JSON.stringify({ served: req.url, method: req.method })}\n`);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        app: true,
        method: req.method,
        url: req.url,
        xfcc: req.headers['x-forwarded-client-cert'] ?? null,
        from: req.socket.remoteAddress,
      }),
    );
  });
});
app.listen(port, '0.0.0.0', () => process.stdout.write(`${JSON.stringify({ ready: true })}\n`));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
