// DER encoding of leaf X.509-SVIDs and the signature over them, without the general ASN.1
// library (which cost ≈35 ms a certificate and blocks the API server's event loop). Owns: the
// exact bytes of leaf certificates. Must never: encode anything not listed in X509-SVID §4 for
// a leaf. openssl parses and verifies every shape this file produces (ca.test.ts).

import { KeyObject, createHash, sign } from 'node:crypto';
import { isIP } from 'node:net';
import type { KeyKind, SigningKey } from './crypto.js';

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
}

const seq = (...c: Buffer[]) => tlv(0x30, ...c);
const octets = (b: Buffer) => tlv(0x04, b);
const bitString = (b: Buffer, unused = 0) => tlv(0x03, Buffer.from([unused]), b);

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * (parts[0] ?? 0) + (parts[1] ?? 0)];
  for (const p of parts.slice(2)) {
    const b: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) b.unshift((v & 0x7f) | 0x80);
    out.push(...b);
  }
  return tlv(0x06, Buffer.from(out));
}

/** A positive INTEGER from hex (a leading zero byte is added when the top bit is set). */
function integerHex(hex: string): Buffer {
  let b = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  while (b.length > 1 && b[0] === 0 && ((b[1] ?? 0) & 0x80) === 0) b = b.subarray(1);
  if (((b[0] ?? 0) & 0x80) !== 0) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
function time(d: Date): Buffer {
  const iso = d.toISOString();
  const y = d.getUTCFullYear();
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return y < 2050 && y >= 1950
    ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii'))
    : tlv(0x18, Buffer.from(digits, 'ascii'));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), octets(value));
}

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  // IPv6: an embedded IPv4 tail becomes two groups, then '::' expands to zero groups.
  let text = ip;
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  if (dotted) {
    const [a = 0, b = 0, c = 0, d = 0] = (dotted[2] ?? '').split('.').map(Number);
    text = `${dotted[1] ?? ''}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail = ''] = text.includes('::') ? text.split('::') : [text, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = text.includes('::')
    ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
    : h;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function signatureAlgorithm(kind: KeyKind): { der: Buffer; hash: string } {
  switch (kind.type) {
    case 'ec':
      return kind.curve === 'P-384'
        ? { der: seq(oid('1.2.840.10045.4.3.3')), hash: 'sha384' }
        : { der: seq(oid('1.2.840.10045.4.3.2')), hash: 'sha256' };
    case 'rsa':
      return { der: seq(oid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0x00])), hash: 'sha256' };
  }
}

/** SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2 method 1), as openssl computes it. */
export function keyIdentifier(spki: Buffer): Buffer | undefined {
  // SEQUENCE { AlgorithmIdentifier, BIT STRING }: skip to the BIT STRING's content.
  let p = 0;
  const skipHeader = (): number | undefined => {
    p++;
    const l = spki[p] ?? 0;
    p++;
    if (l & 0x80) {
      const n = l & 0x7f;
      let v = 0;
      for (let i = 0; i < n; i++) v = v * 256 + (spki[p + i] ?? 0);
      p += n;
      return v;
    }
    return l;
  };
  if (spki[0] !== 0x30 || skipHeader() === undefined) return undefined;
  if (spki[p] !== 0x30) return undefined;
  const algLen = skipHeader() ?? 0;
  p += algLen;
  if (spki[p] !== 0x03) return undefined;
  const bitsLen = skipHeader() ?? 0;
  const key = spki.subarray(p + 1, p + bitsLen);
  return createHash('sha1').update(key).digest();
}

export interface LeafEncoding {
  readonly serialHex: string;
  /** DER of the issuer's subject Name, copied from its certificate. */
  readonly issuerName: Buffer;
  /** The issuer's subject key identifier. */
  readonly issuerKeyId: Buffer;
  readonly signerKind: KeyKind;
  readonly signerKey: SigningKey;
  /** DER SubjectPublicKeyInfo of the certified key. */
  readonly spki: Buffer;
  readonly rsaSubject: boolean;
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  readonly ips: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** The signed DER certificate. */
export function encodeLeaf(p: LeafEncoding): Buffer {
  const alg = signatureAlgorithm(p.signerKind);
  const names = [
    tlv(0x86, Buffer.from(p.spiffeId, 'ascii')),
    ...p.dnsNames.map((d) => tlv(0x82, Buffer.from(d, 'ascii'))),
    ...p.ips.map((ip) => tlv(0x87, ipBytes(ip))),
  ];
  // digitalSignature is bit 0; keyEncipherment bit 2 (RFC 5280 §4.2.1.3), minimal DER bits.
  const ku = p.rsaSubject ? bitString(Buffer.from([0xa0]), 5) : bitString(Buffer.from([0x80]), 7);
  const ski = keyIdentifier(p.spki) ?? Buffer.alloc(0);
  const extensions = [
    extension('2.5.29.19', true, seq()),
    extension('2.5.29.15', true, ku),
    extension('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2'))),
    extension('2.5.29.17', true, seq(...names)),
    extension('2.5.29.14', false, octets(ski)),
    extension('2.5.29.35', false, seq(tlv(0x80, p.issuerKeyId))),
  ];
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    integerHex(p.serialHex),
    alg.der,
    p.issuerName,
    seq(time(p.notBefore), time(p.notAfter)),
    seq(), // empty subject: the SAN carries the identity and is critical (X509-SVID §3.1)
    p.spki,
    tlv(0xa3, seq(...extensions)),
  );
  const signature = sign(alg.hash, tbs, {
    key: KeyObject.from(p.signerKey),
    dsaEncoding: 'der',
  });
  return seq(tbs, alg.der, bitString(signature));
}
