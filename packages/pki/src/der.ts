// A minimal, bounds-checked DER reader for the few certificate fields the SVID leaf check needs
// (extensions: basic constraints, key usage, extended key usage, subject alternative names).
// It exists because the general ASN.1 library costs milliseconds per certificate and the check
// runs on every TLS handshake of the sidecar. Owns: parsing only. Must never: throw on hostile
// input (every read is bounds-checked; malformed input yields undefined), or accept BER.

interface Tlv {
  /** Position of the tag byte. */
  readonly head: number;
  readonly tag: number;
  /** Start and end (exclusive) of the value. */
  readonly start: number;
  readonly end: number;
}

function readTlv(b: Uint8Array, pos: number, limit: number): Tlv | undefined {
  if (pos + 2 > limit) return undefined;
  const tag = b[pos] ?? -1;
  if ((tag & 0x1f) === 0x1f) return undefined; // multi-byte tags do not occur in certificates
  let len = b[pos + 1] ?? 0;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > limit) return undefined; // 0: indefinite length (BER)
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (b[p + i] ?? 0);
    p += n;
    if (len < 0x80 || (n > 1 && (b[p - n] ?? 0) === 0)) return undefined; // not minimal: not DER
  }
  if (p + len > limit) return undefined;
  return { head: pos, tag, start: p, end: p + len };
}

function children(b: Uint8Array, t: Tlv): Tlv[] | undefined {
  const out: Tlv[] = [];
  let p = t.start;
  while (p < t.end) {
    const c = readTlv(b, p, t.end);
    if (!c) return undefined;
    out.push(c);
    p = c.end;
  }
  return out;
}

function equalBytes(b: Uint8Array, t: Tlv, want: readonly number[]): boolean {
  if (t.end - t.start !== want.length) return false;
  for (let i = 0; i < want.length; i++) if (b[t.start + i] !== want[i]) return false;
  return true;
}

const OID_BASIC_CONSTRAINTS = [0x55, 0x1d, 0x13];
const OID_KEY_USAGE = [0x55, 0x1d, 0x0f];
const OID_EXT_KEY_USAGE = [0x55, 0x1d, 0x25];
const OID_SAN = [0x55, 0x1d, 0x11];
const OID_SERVER_AUTH = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_CLIENT_AUTH = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/** Key usage bits, numbered as RFC 5280 §4.2.1.3 numbers them. */
export const KU_DIGITAL_SIGNATURE = 0;
export const KU_KEY_ENCIPHERMENT = 2;
export const KU_KEY_CERT_SIGN = 5;
export const KU_CRL_SIGN = 6;

export interface ExtendedKeyUsage {
  readonly serverAuth: boolean;
  readonly clientAuth: boolean;
}

export interface LeafExtensions {
  /** Undefined when the extension is absent. */
  readonly ca?: boolean;
  /** Set bit numbers; undefined when the extension is absent. */
  readonly keyUsage?: ReadonlySet<number>;
  readonly eku?: ExtendedKeyUsage;
  /** URI names of the SAN extension; undefined when the extension is absent. */
  readonly uris?: readonly string[];
  /** Whether some extension occurs twice (RFC 5280 §4.2 forbids it). */
  readonly duplicate: boolean;
}

function decodeBasicConstraints(b: Uint8Array, v: Tlv): boolean | undefined {
  const seq = readTlv(b, v.start, v.end);
  if (!seq || seq.tag !== 0x30 || seq.end !== v.end) return undefined;
  const items = children(b, seq);
  if (!items) return undefined;
  const first = items[0];
  if (!first || first.tag !== 0x01) return false; // cA DEFAULT FALSE
  if (first.end - first.start !== 1) return undefined;
  return (b[first.start] ?? 0) !== 0;
}

function decodeKeyUsage(b: Uint8Array, v: Tlv): Set<number> | undefined {
  const bits = readTlv(b, v.start, v.end);
  if (!bits || bits.tag !== 0x03 || bits.end - bits.start < 1) return undefined;
  const unused = b[bits.start] ?? 0;
  if (unused > 7) return undefined;
  const set = new Set<number>();
  const total = (bits.end - bits.start - 1) * 8 - unused;
  for (let i = 0; i < total; i++)
    if (((b[bits.start + 1 + (i >> 3)] ?? 0) >> (7 - (i & 7))) & 1) set.add(i);
  return set;
}

function decodeEku(b: Uint8Array, v: Tlv): ExtendedKeyUsage | undefined {
  const seq = readTlv(b, v.start, v.end);
  if (!seq || seq.tag !== 0x30) return undefined;
  const oids = children(b, seq);
  if (!oids || oids.some((o) => o.tag !== 0x06)) return undefined;
  return {
    serverAuth: oids.some((o) => equalBytes(b, o, OID_SERVER_AUTH)),
    clientAuth: oids.some((o) => equalBytes(b, o, OID_CLIENT_AUTH)),
  };
}

function decodeSanUris(b: Uint8Array, v: Tlv): string[] | undefined {
  const seq = readTlv(b, v.start, v.end);
  if (!seq || seq.tag !== 0x30) return undefined;
  const names = children(b, seq);
  if (!names) return undefined;
  const uris: string[] = [];
  for (const n of names) {
    if (n.tag !== 0x86) continue; // [6] uniformResourceIdentifier, IA5String
    let s = '';
    for (let i = n.start; i < n.end; i++) {
      const c = b[i] ?? 0;
      if (c > 0x7e || c < 0x20) return undefined; // IA5 printable only; no NUL tricks
      s += String.fromCharCode(c);
    }
    uris.push(s);
  }
  return uris;
}

/** Reads the extensions of a DER certificate; undefined when it is not well-formed DER. */
export function readLeafExtensions(der: Uint8Array): LeafExtensions | undefined {
  const cert = readTlv(der, 0, der.length);
  if (!cert || cert.tag !== 0x30 || cert.end !== der.length) return undefined;
  const tbs = readTlv(der, cert.start, cert.end);
  if (!tbs || tbs.tag !== 0x30) return undefined;
  const fields = children(der, tbs);
  if (!fields) return undefined;
  const extsWrapper = fields.find((f) => f.tag === 0xa3);
  const out: {
    ca?: boolean;
    keyUsage?: Set<number>;
    eku?: ExtendedKeyUsage;
    uris?: string[];
    duplicate: boolean;
  } = { duplicate: false };
  if (!extsWrapper) return out;
  const extSeq = readTlv(der, extsWrapper.start, extsWrapper.end);
  if (!extSeq || extSeq.tag !== 0x30) return undefined;
  const exts = children(der, extSeq);
  if (!exts) return undefined;
  const seen = new Set<string>();
  for (const e of exts) {
    if (e.tag !== 0x30) return undefined;
    const parts = children(der, e);
    const oid = parts?.[0];
    const value = parts?.at(-1);
    if (!parts || !oid || !value || oid.tag !== 0x06 || value.tag !== 0x04) return undefined;
    if (parts.length === 3 && parts[1]?.tag !== 0x01) return undefined;
    const key = Buffer.from(der.subarray(oid.start, oid.end)).toString('hex');
    if (seen.has(key)) out.duplicate = true;
    seen.add(key);
    if (equalBytes(der, oid, OID_BASIC_CONSTRAINTS)) {
      const ca = decodeBasicConstraints(der, value);
      if (ca === undefined) return undefined;
      out.ca = ca;
    } else if (equalBytes(der, oid, OID_KEY_USAGE)) {
      const ku = decodeKeyUsage(der, value);
      if (!ku) return undefined;
      out.keyUsage = ku;
    } else if (equalBytes(der, oid, OID_EXT_KEY_USAGE)) {
      const eku = decodeEku(der, value);
      if (!eku) return undefined;
      out.eku = eku;
    } else if (equalBytes(der, oid, OID_SAN)) {
      const uris = decodeSanUris(der, value);
      if (!uris) return undefined;
      out.uris = uris;
    }
  }
  return out;
}

/** The raw DER of a certificate's subject Name (to use as the issuer of what it signs). */
export function readSubjectName(der: Uint8Array): Buffer | undefined {
  const cert = readTlv(der, 0, der.length);
  if (!cert || cert.tag !== 0x30) return undefined;
  const tbs = readTlv(der, cert.start, cert.end);
  if (!tbs || tbs.tag !== 0x30) return undefined;
  const fields = children(der, tbs);
  if (!fields) return undefined;
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0; // explicit version present
  const subject = fields[offset + 4];
  if (!subject || subject.tag !== 0x30) return undefined;
  return Buffer.from(der.subarray(subject.head, subject.end));
}

export interface CsrParts {
  /** The signed certificationRequestInfo, header included. */
  readonly info: Buffer;
  /** The SubjectPublicKeyInfo, header included. */
  readonly spki: Buffer;
  /** Content bytes of the signature algorithm OID, hex. */
  readonly signatureOid: string;
  readonly signature: Buffer;
}

/** Splits a DER PKCS#10 request (RFC 2986 §4) into what signature verification needs. */
export function readCsrParts(der: Uint8Array): CsrParts | undefined {
  const top = readTlv(der, 0, der.length);
  if (!top || top.tag !== 0x30 || top.end !== der.length) return undefined;
  const parts = children(der, top);
  if (!parts || parts.length !== 3) return undefined;
  const [info, alg, sig] = parts;
  if (!info || !alg || !sig || info.tag !== 0x30 || alg.tag !== 0x30 || sig.tag !== 0x03)
    return undefined;
  const fields = children(der, info);
  const version = fields?.[0];
  const spki = fields?.[2];
  if (!fields || !version || !spki || version.tag !== 0x02 || spki.tag !== 0x30) return undefined;
  if (version.end - version.start !== 1 || der[version.start] !== 0) return undefined;
  const algParts = children(der, alg);
  const algOid = algParts?.[0];
  if (!algOid || algOid.tag !== 0x06) return undefined;
  if (sig.end - sig.start < 2 || der[sig.start] !== 0) return undefined; // no unused bits
  return {
    info: Buffer.from(der.subarray(info.head, info.end)),
    spki: Buffer.from(der.subarray(spki.head, spki.end)),
    signatureOid: Buffer.from(der.subarray(algOid.start, algOid.end)).toString('hex'),
    signature: Buffer.from(der.subarray(sig.start + 1, sig.end)),
  };
}
