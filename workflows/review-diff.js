export const meta = {
  name: 'review-diff',
  description: 'Review the current git diff along several dimensions; a finding is reported only if it survives two adversarial challenges',
  whenToUse: 'Before committing, or before opening a pull request',
  phases: [
    { title: 'Review', detail: 'one reviewer per dimension, each seeing the whole diff' },
    { title: 'Challenge', detail: 'two independent challengers try to refute each finding', model: 'haiku' },
    { title: 'Report' },
  ],
}

// args: { range?: string (e.g. 'HEAD~1..HEAD'; default: HEAD against the working tree),
//         dimensions?: [{ name, ask }] }
const DIMENSIONS = args?.dimensions ?? [
  { name: 'correctness', ask: 'logic errors, wrong conditions, off-by-one errors, broken error handling' },
  { name: 'security', ask: 'injection, path traversal, leaked secrets, unchecked input' },
  { name: 'performance', ask: 'needless allocation or copying, quadratic loops, blocking calls' },
  { name: 'maintainability', ask: 'unclear names, changed behaviour without tests, dead code' },
]
const range = args?.range ?? null

const FINDINGS = {
  type: 'object',
  properties: {
    findings: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          file: { type: 'string' },
          title: { type: 'string' },
          severity: { enum: ['minor', 'major', 'critical'] },
          evidence: { type: 'string' },
        },
        required: ['file', 'title', 'severity', 'evidence'],
      },
    },
  },
  required: ['findings'],
}
const REBUTTAL = {
  type: 'object',
  properties: { refuted: { type: 'boolean' }, argument: { type: 'string' } },
  required: ['refuted', 'argument'],
}
// The two challengers attack a finding from different sides, without seeing each other.
const CHALLENGES = [
  'Argue that this finding is wrong: show from the diff that the code is in fact correct.',
  'Argue that this finding does not matter: show that it cannot happen in practice or has no effect.',
]

const diff = tools.git.diff(range)
if (diff.trim() === '') {
  return { range, files: [], dimensions: DIMENSIONS.map((d) => d.name), findings: [], refuted: 0, summary: 'nothing to review' }
}
const files = [...new Set([...diff.matchAll(/^\+\+\+ b\/(.+)$/gm)].map((m) => m[1]))]
log(`reviewing ${files.length} changed file(s) along ${DIMENSIONS.length} dimensions`)

phase('Review')
const reviewed = await pipeline(
  DIMENSIONS,
  (d) =>
    agent(
      `Review this diff for ${d.name} problems only (${d.ask}). Name the file of each problem ` +
        `and quote the lines that show it.\n\n${diff}`,
      { schema: FINDINGS, label: `review ${d.name}` },
    ),
  // No barrier: a dimension's findings are challenged while other reviewers still work.
  (review, d) =>
    parallel(
      review.findings.map((finding) => async () => {
        const rebuttals = await parallel(
          CHALLENGES.map((challenge, k) => () =>
            agent(
              `${challenge} If you cannot, say it is not refuted.\n\nFinding (${d.name}, ${finding.severity}) ` +
                `in ${finding.file}: ${finding.title}\nEvidence: ${finding.evidence}\n\nDiff:\n${diff}`,
              { phase: 'Challenge', schema: REBUTTAL, model: 'haiku', label: `challenge ${k + 1}: ${finding.title}` },
            ),
          ),
        )
        // It stands only if both challengers answered and neither refuted it.
        const stands = rebuttals.every((r) => r !== null && !r.refuted)
        return { ...finding, dimension: d.name, stands, rebuttals: rebuttals.filter(Boolean).map((r) => r.argument) }
      }),
    ),
)

const all = reviewed.filter(Boolean).flat().filter(Boolean)
const findings = all.filter((f) => f.stands).map(({ stands, ...f }) => f)

phase('Report')
const summary = await agent(
  findings.length === 0
    ? 'Write one sentence saying that the review of this diff found no problem that survived scrutiny.'
    : `Write a short review comment for the author of this diff, most severe first:\n` +
        findings.map((f) => `- [${f.severity}] ${f.file}: ${f.title} (${f.dimension})`).join('\n'),
  { label: 'summary' },
)
return {
  range,
  files,
  dimensions: DIMENSIONS.map((d) => d.name),
  findings,
  refuted: all.length - findings.length,
  summary,
}
