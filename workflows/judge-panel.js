export const meta = {
  name: 'judge-panel',
  description: 'Make several independent attempts at a task, have a panel of judges score each attempt on its own, and keep the best',
  whenToUse: 'When one answer may be much better than another and a second opinion is cheap',
  phases: [
    { title: 'Attempt', detail: 'independent attempts, each told to take a different approach' },
    { title: 'Judge', detail: 'every judge scores every attempt without seeing the others', model: 'haiku' },
  ],
}

// args: { task?: string, files?: string[], attempts?: number (1-8), judges?: number (1-5) }
const task =
  args?.task ??
  'Rewrite `add` in src/math.rs so that overflow is reported to the caller instead of wrapping silently.'
const files = args?.files ?? ['src/math.rs', 'src/main.rs']
const attempts = args?.attempts ?? 3
const judges = args?.judges ?? 3
if (!Number.isInteger(attempts) || attempts < 1 || attempts > 8) {
  throw new RangeError(`args.attempts must be a whole number from 1 to 8, not ${attempts}`)
}
if (!Number.isInteger(judges) || judges < 1 || judges > 5) {
  throw new RangeError(`args.judges must be a whole number from 1 to 5, not ${judges}`)
}

// Variety comes from the attempt's index, not from randomness (runs replay deterministically).
const APPROACHES = [
  'the most direct solution',
  'a defensive solution that handles every edge case explicitly',
  'the simplest solution a newcomer could maintain',
  'a solution that changes as few lines as possible',
]
const LENSES = ['correctness', 'clarity', 'completeness', 'risk of regressions', 'fit with the existing code']
const SCORE = {
  type: 'object',
  properties: {
    score: { type: 'integer', minimum: 1, maximum: 10 },
    reason: { type: 'string' },
  },
  required: ['score', 'reason'],
}

const context = files.map((path) => `--- ${path}\n${tools.read(path)}`).join('\n')

phase('Attempt')
const drafts = await parallel(
  Array.from({ length: attempts }, (_, i) => () =>
    agent(`${task}\n\nTake ${APPROACHES[i % APPROACHES.length]}. Answer with the code and one paragraph of rationale.\n\n${context}`, {
      label: `attempt ${i + 1}`,
      effort: 'high',
    }),
  ),
)

phase('Judge')
const ranked = await pipeline(
  drafts,
  (draft, _, i) => {
    if (draft === null) throw new Error(`attempt ${i + 1} produced nothing`)
    return parallel(
      Array.from({ length: judges }, (_, j) => () =>
        agent(
          `You are judging one answer to a task, on ${LENSES[j % LENSES.length]} above all. ` +
            `Score it from 1 (useless) to 10 (excellent) and say why in one sentence.\n\n` +
            `Task: ${task}\n\nAnswer:\n${draft}`,
          { schema: SCORE, model: 'haiku', label: `judge ${j + 1} on attempt ${i + 1}` },
        ),
      ),
    )
  },
  (verdicts, draft, i) => {
    const scores = verdicts.filter(Boolean).map((v) => v.score)
    if (scores.length === 0) throw new Error(`no judge scored attempt ${i + 1}`)
    const mean = scores.reduce((sum, s) => sum + s, 0) / scores.length
    return { attempt: i + 1, mean: Math.round(mean * 100) / 100, scores, answer: draft }
  },
)

const scored = ranked.filter(Boolean)
if (scored.length === 0) throw new Error('no attempt could be scored')
// Highest mean first; on a tie, the earlier attempt.
scored.sort((a, b) => b.mean - a.mean || a.attempt - b.attempt)
const best = scored[0]
log(`best: attempt ${best.attempt} with a mean score of ${best.mean}`)
return {
  task,
  attempts,
  judges,
  ranking: scored.map(({ attempt, mean, scores }) => ({ attempt, mean, scores })),
  best: { attempt: best.attempt, mean: best.mean, answer: best.answer },
}
