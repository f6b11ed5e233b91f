// Protocol names as the resources spell them: any case, or a number 0-255; nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { protocolNumber } from './matchers.js';

test('protocolNumber reads names in any case and numbers 0-255', () => {
  assert.equal(protocolNumber('TCP'), 6);
  assert.equal(protocolNumber('tcp'), 6);
  assert.equal(protocolNumber('Udp'), 17);
  assert.equal(protocolNumber('UDP'), 17);
  assert.equal(protocolNumber('SCTP'), 132);
  assert.equal(protocolNumber('ICMPv6'), 58);
  assert.equal(protocolNumber('UDPLite'), 136);
  assert.equal(protocolNumber('17'), 17);
  assert.equal(protocolNumber(255), 255);
  assert.equal(protocolNumber(256), undefined);
  assert.equal(protocolNumber('256'), undefined);
  assert.equal(protocolNumber(1.5), undefined);
  assert.equal(protocolNumber(undefined), undefined);
});

test('protocolNumber refuses what only the object prototype knows (hostile names)', () => {
  for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', ''])
    assert.equal(protocolNumber(name), undefined, name);
});
