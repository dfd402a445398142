'use strict';
// An independent HBONE-style server: HTTP/2 CONNECT over mutual TLS 1.3, written against Node's
// built-in http2 (nghttp2) and tls (OpenSSL) only -- none of zeromesh's code, no h2 library.
//
// usage: node connect_server.js CONFIG_JSON
//   CONFIG_JSON: {"key": PATH, "cert": PATH, "ca": PATH, "lifetime_ms": N}
//
// Listens on 127.0.0.1 on a free port and prints one JSON object per line on stdout:
//   {"event": "listening", "port": N}
//   {"event": "session", "session": N, "protocol": "TLSv1.3", "alpn": "h2", "servername": ..,
//    "peer_uris": [...]}                                    one per TLS connection
//   {"event": "request", "session": N, "stream": ID, "method": .., "authority": ..,
//    "peer_uris": [...], "headers": {..}, "answer": STATUS | "reset", "reason": ..}
//   {"event": "closed", "session": N, "stream": ID, "up": BYTES, "down": BYTES, "rst_code": N}
//
// A CONNECT to 127.0.0.1:PORT is answered 200 once a TCP connection to it is established, then
// bytes are piped both ways with half-close; any other target is refused with 400 (this server
// only ever dials loopback). A refused TCP connect is answered 503, or -- when the request carries
// `x-interop-refuse: reset` -- with RST_STREAM(CONNECT_ERROR) and no response at all.
const fs = require('fs');
const http2 = require('http2');
const net = require('net');

const cfg = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const { NGHTTP2_CONNECT_ERROR } = http2.constants;

function uris(socket) {
  const cert = socket.getPeerCertificate();
  const sans = (cert && cert.subjectaltname) || '';
  return sans.split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
}

const server = http2.createSecureServer({
  key: fs.readFileSync(cfg.key),
  cert: fs.readFileSync(cfg.cert),
  ca: fs.readFileSync(cfg.ca),
  requestCert: true,
  rejectUnauthorized: true,
  ALPNProtocols: ['h2'],
  allowHTTP1: false,
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
});

let sessions = 0;
const sessionIds = new WeakMap();

server.on('session', (session) => {
  const id = ++sessions;
  sessionIds.set(session, id);
  const sock = session.socket;
  out({
    event: 'session', session: id, protocol: sock.getProtocol(), alpn: sock.alpnProtocol,
    servername: sock.servername, authorized: sock.authorized, peer_uris: uris(sock),
  });
  session.on('error', (err) => out({ event: 'session_error', session: id, code: err.code, message: err.message }));
});

server.on('stream', (stream, headers) => {
  const session = sessionIds.get(stream.session);
  const method = headers[':method'];
  const authority = headers[':authority'];
  const regular = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!k.startsWith(':')) regular[k] = v;
  }
  const rec = {
    event: 'request', session, stream: stream.id, method, authority,
    peer_uris: uris(stream.session.socket), headers: regular,
  };
  let up = 0;
  let down = 0;
  stream.on('error', () => {});
  stream.on('close', () => out({ event: 'closed', session, stream: rec.stream, up, down, rst_code: stream.rstCode }));

  const refuse = (status, reason) => {
    out({ ...rec, answer: status, reason });
    stream.respond({ ':status': status }, { endStream: true });
  };
  if (method !== 'CONNECT') return refuse(400, 'not CONNECT');
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(authority || '');
  if (!m || m[1] !== '127.0.0.1') return refuse(400, 'only 127.0.0.1 targets');

  const upstream = net.connect({ host: m[1], port: Number(m[2]) });
  upstream.on('connect', () => {
    if (stream.destroyed) return upstream.destroy();
    out({ ...rec, answer: 200 });
    stream.respond({ ':status': 200 });
    upstream.on('data', (d) => { down += d.length; });
    stream.on('data', (d) => { up += d.length; });
    upstream.pipe(stream);   // the target's FIN ends our side of the stream (END_STREAM)
    stream.pipe(upstream);   // the client's END_STREAM half-closes the TCP connection
  });
  upstream.on('error', (err) => {
    if (stream.headersSent || stream.destroyed) {
      if (!stream.destroyed) stream.close(NGHTTP2_CONNECT_ERROR);
      return;
    }
    if (headers['x-interop-refuse'] === 'reset') {
      out({ ...rec, answer: 'reset', reason: err.code });
      stream.close(NGHTTP2_CONNECT_ERROR);
    } else {
      refuse(503, err.code);
    }
  });
  stream.on('close', () => upstream.destroy());
  return undefined;
});

server.on('tlsClientError', (err) => out({ event: 'tls_error', code: err.code, message: err.message }));

server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));

// Never outlive the test that started us, even if it could not stop us.
setTimeout(() => process.exit(3), cfg.lifetime_ms || 300000);
