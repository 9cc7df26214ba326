export const meta = {
  name: 'review-changes',
  description: 'Review a diff along two dimensions and verify every finding',
  phases: [{ title: 'Review' }, { title: 'Verify' }],
}
const FINDINGS = { type: 'object', properties: { findings: { type: 'array', items: {
  type: 'object', properties: { title: { type: 'string' } }, required: ['title'] } } },
  required: ['findings'] }
const VERDICT = { type: 'object', properties: { real: { type: 'boolean' } }, required: ['real'] }
const results = await pipeline(
  ['Find correctness bugs in the current diff.', 'Find performance regressions in the current diff.'],
  p => agent(p, { phase: 'Review', schema: FINDINGS }),
  review => parallel(review.findings.map(f => () =>
    agent(`Try to refute this finding; default to refuted if unsure: ${f.title}`,
          { phase: 'Verify', schema: VERDICT, model: 'haiku' }).then(v => ({ ...f, verdict: v })))),
)
return results.flat().filter(Boolean).filter(f => f.verdict?.real)
