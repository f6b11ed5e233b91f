import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { KU_DIGITAL_SIGNATURE, KU_KEY_CERT_SIGN, readCsrParts, readLeafExtensions } from './der.js';
import { readCsr } from './certificates.js';
import { createKeyAndCsr } from './workload.js';
import { pemCertificates, x509 } from './crypto.js';
import { CA_EXT, opensslRoot, opensslSigned, tempDir } from './test-helpers.js';

test('DER reader: agrees with the full ASN.1 library on openssl-made certificates', () => {
  const t = tempDir('der');
  try {
    const root = opensslRoot(t.path, 'root', `${CA_EXT}\nsubjectAltName=URI:spiffe://td`);
    const leaf = opensslSigned(
      t.path,
      'leaf',
      root,
      'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:a.example,URI:spiffe://td/a,IP:10.0.0.1,URI:spiffe://td/b',
    );
    for (const pem of [root.certPem, leaf.certPem]) {
      const der = pemCertificates(pem)[0] ?? Buffer.alloc(0);
      const mine = readLeafExtensions(der);
      assert.ok(mine);
      const lib = new x509.X509Certificate(der);
      assert.equal(mine.ca, lib.getExtension(x509.BasicConstraintsExtension)?.ca);
      const usages = lib.getExtension(x509.KeyUsagesExtension)?.usages ?? 0;
      assert.equal(
        mine.keyUsage?.has(KU_DIGITAL_SIGNATURE),
        (usages & x509.KeyUsageFlags.digitalSignature) !== 0,
      );
      assert.equal(
        mine.keyUsage?.has(KU_KEY_CERT_SIGN),
        (usages & x509.KeyUsageFlags.keyCertSign) !== 0,
      );
      const libUris = (lib.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [])
        .filter((n) => n.type === 'url')
        .map((n) => n.value);
      assert.deepEqual(mine.uris, libUris);
    }
    const l = readLeafExtensions(pemCertificates(leaf.certPem)[0] ?? Buffer.alloc(0));
    assert.deepEqual(l?.eku, { serverAuth: true, clientAuth: true });
    assert.deepEqual(l?.uris, ['spiffe://td/a', 'spiffe://td/b']);
    assert.equal(l?.duplicate, false);
  } finally {
    t.cleanup();
  }
});

test('DER reader: never throws on random bytes or on any single-byte corruption of a certificate', () => {
  const t = tempDir('der-fuzz');
  try {
    const root = opensslRoot(t.path, 'root', CA_EXT);
    const der = pemCertificates(root.certPem)[0] ?? Buffer.alloc(0);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        readLeafExtensions(bytes);
      }),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 }), (i, v) => {
        const copy = Buffer.from(der);
        copy[i] = v;
        readLeafExtensions(copy);
      }),
      { numRuns: 3000 },
    );
    // Truncations, an indefinite length (BER) and trailing garbage are refused.
    for (let n = 0; n < der.length; n += 7)
      assert.equal(readLeafExtensions(der.subarray(0, n)), undefined);
    assert.equal(readLeafExtensions(Buffer.from([0x30, 0x80, 0x00, 0x00])), undefined);
    assert.equal(readLeafExtensions(Buffer.concat([der, Buffer.from([0])])), undefined);
  } finally {
    t.cleanup();
  }
});

test('CSR intake never throws on corrupted requests, and a corrupted request never verifies', async () => {
  const { csrPem } = await createKeyAndCsr();
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  assert.ok(readCsr(csrPem).ok);
  fc.assert(
    fc.property(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 }), (i, v) => {
      const copy = Buffer.from(der);
      if (copy[i] === v) return;
      copy[i] = v;
      const r = readCsr(
        `-----BEGIN CERTIFICATE REQUEST-----\n${copy.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`,
      );
      // A change in the signed part or the signature must not verify; a change elsewhere
      // (only the outer lengths and tags) must not parse.
      assert.equal(r.ok, false);
    }),
    { numRuns: 1500 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
      readCsrParts(bytes);
    }),
    { numRuns: 2000 },
  );
});
