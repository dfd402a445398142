'use strict';
// An independent HBONE-style client: HTTP/2 CONNECT over mutual TLS 1.3, written against Node's
// built-in http2 (nghttp2) and tls (OpenSSL) only -- none of zeromesh's code, no h2 library.
//
// usage: node connect_client.js CONFIG_JSON
//   CONFIG_JSON: {"host": IP, "port": N, "ca": PATH, "cert": PATH?, "key": PATH?, "timeout_ms": N,
//                 "probes": [{"name": .., "method": "CONNECT"|"GET", "authority": "ip:port",
//                             "path": "/..", "send": TEXT?, "timeout_ms": N}]}
//
// Opens ONE TLS connection (TLS 1.3 only, ALPN h2, no SNI, the chain verified against `ca`, no
// hostname check: the peer is identified by its URI SAN, which is reported), then runs the probes
// one after the other as streams of that connection. A CONNECT probe that gets a 2xx writes
// `send` into the tunnel, half-closes, and reads until the server ends the stream.
// Prints one JSON object on stdout:
//   {"tls": {"protocol", "alpn", "authorized", "authorization_error", "peer_uris", "sni"},
//    "session_error": {code, message} | null, "goaway": {..} | null,
//    "probes": [{"name", "status", "headers", "body", "ended", "rst_code", "error"}],
//    "timeout": bool}
const fs = require('fs');
const http2 = require('http2');
const tls = require('tls');

const cfg = JSON.parse(process.argv[2]);
const result = { tls: null, session_error: null, goaway: null, probes: [], timeout: false };
let finished = false;

function finish(code) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code));
}

setTimeout(() => { result.timeout = true; finish(2); }, cfg.timeout_ms || 20000);

function uris(socket) {
  const cert = socket.getPeerCertificate();
  const sans = (cert && cert.subjectaltname) || '';
  return sans.split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
}

const tlsOptions = {
  host: cfg.host,
  port: cfg.port,
  ca: fs.readFileSync(cfg.ca),
  ALPNProtocols: ['h2'],
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  rejectUnauthorized: true,              // the chain must verify against the mesh roots ...
  checkServerIdentity: () => undefined,  // ... but there is no hostname: the URI SAN is the identity
};
if (cfg.cert) {
  tlsOptions.cert = fs.readFileSync(cfg.cert);
  tlsOptions.key = fs.readFileSync(cfg.key);
}

// Our own TLS socket: no `servername` at all, so no SNI extension is sent (Istio's ztunnel sends
// none); http2.connect would otherwise fill the servername in from the URL.
const session = http2.connect(`https://${cfg.host}:${cfg.port}`, {
  createConnection: () => tls.connect(tlsOptions),
});
let probing = false;

session.on('error', (err) => { result.session_error = { code: err.code, message: err.message }; });
session.on('goaway', (code, last, data) => {
  result.goaway = { code, last_stream: last, debug: data ? data.toString() : '' };
});
session.on('close', () => { if (!probing) finish(0); });
session.on('connect', () => {
  const s = session.socket;
  result.tls = {
    protocol: s.getProtocol(), alpn: s.alpnProtocol, authorized: s.authorized,
    authorization_error: s.authorizationError ? String(s.authorizationError) : null,
    peer_uris: uris(s), sni: s.servername || null,
  };
  probing = true;
  run().then(() => {
    probing = false;
    if (session.closed || session.destroyed) return finish(0);
    session.close(() => finish(0));
    setTimeout(() => finish(0), 2000);
    return undefined;
  });
});

function probe(p) {
  return new Promise((resolve) => {
    const r = { name: p.name, status: null, headers: null, body: '', ended: false, rst_code: null, error: null };
    const connect = p.method === 'CONNECT';
    const headers = connect
      ? { ':method': 'CONNECT', ':authority': p.authority }
      : { ':method': p.method, ':path': p.path || '/' };
    let req;
    try {
      req = session.request(headers, { endStream: !connect });
    } catch (err) {
      r.error = { code: err.code, message: err.message };
      resolve(r);
      return;
    }
    const chunks = [];
    let done = false;
    const settle = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      r.rst_code = req.rstCode === undefined ? null : req.rstCode;
      r.body = Buffer.concat(chunks).toString('latin1');
      resolve(r);
    };
    const timer = setTimeout(() => {
      r.error = r.error || { code: 'PROBE_TIMEOUT', message: 'no answer in time' };
      req.close(http2.constants.NGHTTP2_CANCEL);
      settle();
    }, p.timeout_ms || 8000);
    req.on('response', (h) => {
      r.status = h[':status'];
      r.headers = { ...h };
      if (connect && r.status >= 200 && r.status < 300 && p.send !== undefined) {
        req.end(Buffer.from(p.send, 'latin1'));   // the request, then half-close (END_STREAM)
      } else if (connect && !req.writableEnded) {
        req.end();
      }
    });
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => { r.ended = true; });
    req.on('error', (err) => { r.error = { code: err.code, message: err.message }; });
    req.on('close', settle);
  });
}

async function run() {
  for (const p of cfg.probes || []) {
    result.probes.push(await probe(p));
  }
}
