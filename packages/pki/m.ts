import { CertificateAuthority, createKeyAndCsr, allowAnyIdentityForDevelopment, verifySvid } from './src/index.js';
const ca = await CertificateAuthority.init('/tmp/pki-measure-' + process.pid);
const csrs = await Promise.all(Array.from({ length: 200 }, () => createKeyAndCsr()));
let t = performance.now();
const certs: string[] = [];
for (const c of csrs) { const r = await ca.issueFromCsr(c.csrPem, { spiffeId: 'spiffe://cluster.local/ns/a/sa/b', requester: 'm', authorize: allowAnyIdentityForDevelopment }); if (r.ok) certs.push(r.svid.certPem); }
const issueMs = performance.now() - t;
const b = ca.bundle();
t = performance.now();
for (let i = 0; i < 5; i++) for (const c of certs) if (!verifySvid([c], b, { now: new Date() }).ok) throw new Error();
const verMs = performance.now() - t;
console.log(JSON.stringify({ issue_per_s: Math.round(200 / (issueMs / 1000)), verify_first_seen_per_s: Math.round(1000 / (verMs / 1000)) }));
