// A proxy in front of the sample that loses one request: it forwards everything, but its /metrics reports one
// request fewer on the first http_server_request_duration_seconds_count line of /items/{id:int}. eng/test.sh runs
// k6/smoke.js through it and expects the nothing-lost check to fail (k6 exit code 99).
// node k6/test/drop-one-count.js LISTEN_PORT TARGET_PORT
const http = require('node:http');

const [listenPort, targetPort] = process.argv.slice(2).map(Number);
let dropped = false;

http.createServer((req, res) => {
  const upstream = http.request({ host: '127.0.0.1', port: targetPort, path: req.url, method: req.method, headers: req.headers }, (up) => {
    if (!req.url.startsWith('/metrics')) {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
      return;
    }
    let body = '';
    up.setEncoding('utf8');
    up.on('data', (c) => { body += c; });
    up.on('end', () => {
      const lines = body.split('\n');
      const i = lines.findIndex((l) => l.startsWith('http_server_request_duration_seconds_count{') && l.includes('http_route="/items/{id:int}"'));
      if (i >= 0 && dropped) {
        const at = lines[i].lastIndexOf(' ');
        lines[i] = `${lines[i].slice(0, at)} ${Number(lines[i].slice(at + 1)) - 1}`;
      }
      dropped = true; // the first scrape (k6's setup) is passed through; later ones lose one request
      const out = lines.join('\n');
      const headers = { ...up.headers, 'content-length': Buffer.byteLength(out) };
      delete headers['transfer-encoding'];
      res.writeHead(up.statusCode, headers);
      res.end(out);
    });
  });
  upstream.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
  req.pipe(upstream);
}).listen(listenPort, '127.0.0.1');
