export const meta = {
  name: 'audit',
  description: 'Audit source files one auditor per file, then have a skeptic verify every finding before it is reported',
  whenToUse: 'Before a release, or when taking over an unfamiliar code base',
  phases: [
    { title: 'Audit', detail: 'one auditor per file, with read and grep access to the repository' },
    { title: 'Verify', detail: 'an independent skeptic checks each finding against the code', model: 'haiku' },
  ],
}

// args: { glob?: string, focus?: string, maxFiles?: number }
const pattern = args?.glob ?? '**/*.rs'
const focus = args?.focus ?? 'correctness bugs, unchecked arithmetic, panics and unvalidated input'
const maxFiles = args?.maxFiles ?? 50

const FINDINGS = {
  type: 'object',
  properties: {
    findings: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          line: { type: 'integer', minimum: 1 },
          title: { type: 'string' },
          severity: { enum: ['low', 'medium', 'high'] },
          explanation: { type: 'string' },
        },
        required: ['line', 'title', 'severity', 'explanation'],
      },
    },
  },
  required: ['findings'],
}
const VERDICT = {
  type: 'object',
  properties: { real: { type: 'boolean' }, reason: { type: 'string' } },
  required: ['real', 'reason'],
}
const SEVERITY_ORDER = { high: 0, medium: 1, low: 2 }

const numbered = (text) =>
  text.split('\n').map((line, i) => `${String(i + 1).padStart(4)} | ${line}`).join('\n')

const files = tools.glob(pattern).slice(0, maxFiles)
if (files.length === 0) {
  return { pattern, files: 0, findings: 0, confirmed: [], rejected: 0, unverified: 0, failed: [] }
}
log(`auditing ${files.length} file(s) matching ${pattern}`)

const reports = await pipeline(
  files,
  // Stage 1: one auditor per file. A file that cannot be audited becomes null.
  async (path) => {
    const source = await tools.read(path)
    const review = await agent(
      `Audit the file ${path} for ${focus}. Report only concrete problems you can point at, ` +
        `each with its line number; report nothing rather than guess.\n\n${numbered(source)}`,
      { phase: 'Audit', label: `audit ${path}`, schema: FINDINGS, tools: ['read', 'grep'] },
    )
    return { source, findings: review.findings }
  },
  // Stage 2: as soon as a file's audit is in, verify its findings, each on its own.
  async ({ source, findings }, path) => {
    const checked = await parallel(
      findings.map((finding) => () =>
        agent(
          `A colleague reports this problem in ${path}, line ${finding.line}: "${finding.title}". ` +
            `${finding.explanation}\nCheck it against the code. Say it is real only if the code ` +
            `clearly shows it; when unsure, it is not real.\n\n${numbered(source)}`,
          { phase: 'Verify', label: `verify ${path}:${finding.line}`, schema: VERDICT, model: 'haiku' },
        ).then((verdict) => ({ ...finding, verdict })),
      ),
    )
    return {
      path,
      findings: findings.length,
      confirmed: checked.filter((f) => f !== null && f.verdict.real),
      rejected: checked.filter((f) => f !== null && !f.verdict.real).length,
      unverified: checked.filter((f) => f === null).length,
    }
  },
)

const done = reports.filter(Boolean)
const confirmed = done
  .flatMap((r) =>
    r.confirmed.map((f) => ({
      path: r.path,
      line: f.line,
      severity: f.severity,
      title: f.title,
      reason: f.verdict.reason,
    })),
  )
  .sort(
    (a, b) =>
      SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] ||
      (a.path < b.path ? -1 : a.path > b.path ? 1 : 0) ||
      a.line - b.line,
  )
const total = (key) => done.reduce((sum, r) => sum + r[key], 0)
return {
  pattern,
  files: files.length,
  findings: total('findings'),
  confirmed,
  rejected: total('rejected'),
  unverified: total('unverified'),
  failed: files.filter((_, i) => reports[i] === null),
}
