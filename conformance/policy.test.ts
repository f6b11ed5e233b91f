import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from '../packages/core/src/load/load.js';
import { compile } from '../packages/core/src/engine/engine.js';
import { loadPolicyCorpus } from './policy-corpus.js';

const corpus = loadPolicyCorpus();

test('policy corpus: at least 150 cases, each with a name, a cited rule and probes with expectations', () => {
  assert.ok(corpus.length >= 150, `${corpus.length} cases`);
  const names = new Set<string>();
  for (const c of corpus) {
    assert.ok(c.name && c.rule && c.rule.length > 20, `${c.file}: ${c.name}`);
    assert.ok(!names.has(`${c.file}/${c.name}`), `duplicate case name ${c.name}`);
    names.add(`${c.file}/${c.name}`);
    assert.ok(c.probes.length > 0, c.name);
    for (const p of c.probes)
      assert.ok(p.expect === 'allow' || p.expect === 'deny', `${c.name}: ${JSON.stringify(p)}`);
  }
});

for (const c of corpus) {
  test(`${c.file}: ${c.name}`, c.knownEngineGap ? { todo: c.knownEngineGap } : {}, () => {
    const loaded = loadText(c.resources, c.file);
    const errors = loaded.diagnostics.filter((d) => d.severity === 'error');
    assert.deepEqual(errors, [], 'the case resources must load');
    const engine = compile(loaded.resources);
    for (const p of c.probes) {
      const { expect, kernel, l7, decidedBy, ...probe } = p;
      const r = engine.check(probe);
      assert.ok(r.ok, r.ok ? '' : `${r.code}: ${r.message}`);
      const res = r.result;
      const why = `probe ${JSON.stringify(probe)}\n  kernel egress: ${res.kernel.egress.provenance.reason}\n  kernel ingress: ${res.kernel.ingress.provenance.reason}\n  l7: ${res.l7.provenance.reason}\n  rule: ${c.rule}`;
      assert.equal(res.verdict, expect, `verdict\n${why}`);
      if (kernel) {
        const k =
          res.kernel.egress.verdict === 'allow' && res.kernel.ingress.verdict === 'allow'
            ? 'allow'
            : 'deny';
        assert.equal(k, kernel, `kernel\n${why}`);
      }
      if (l7) assert.equal(res.l7.verdict, l7, `l7\n${why}`);
      if (decidedBy) {
        const prov =
          decidedBy.point === 'l7'
            ? res.l7.provenance
            : res.kernel.ingress.verdict === 'deny'
              ? res.kernel.ingress.provenance
              : res.kernel.egress.verdict === 'deny'
                ? res.kernel.egress.provenance
                : res.kernel.ingress.provenance;
        if (decidedBy.tier) assert.equal(prov.tier, decidedBy.tier, `tier\n${why}`);
        if (decidedBy.policy) assert.equal(prov.policy, decidedBy.policy, `policy\n${why}`);
        if (decidedBy.kind) assert.equal(prov.kind, decidedBy.kind, `kind\n${why}`);
        if (decidedBy.binding) assert.equal(prov.binding, decidedBy.binding, `binding\n${why}`);
      }
    }
  });
}
