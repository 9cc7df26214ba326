export const meta = {
  name: 'rubric-retry',
  description: 'Draft an answer, grade it against a rubric with one grader per criterion, and revise it with the failed criteria until it passes or the attempts run out',
  whenToUse: 'When the result must meet a checklist, such as documentation or a changelog entry',
  phases: [
    { title: 'Draft', detail: 'write, or revise with the graders\' feedback' },
    { title: 'Grade', detail: 'one strict grader per rubric criterion', model: 'haiku' },
  ],
}

// args: { task?: string, file?: string, rubric?: string[], maxAttempts?: number (1-10) }
const task = args?.task ?? 'Write the doc comment for the `add` function below.'
const file = args?.file ?? 'src/math.rs'
const rubric = args?.rubric ?? [
  'It says what the function returns.',
  'It says what happens on overflow.',
  'It includes a short usage example.',
]
const maxAttempts = args?.maxAttempts ?? 3
if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 10) {
  throw new RangeError(`args.maxAttempts must be a whole number from 1 to 10, not ${maxAttempts}`)
}
// Stop revising when a round (one draft and its grades) could no longer be paid for: each
// agent call may need its prompt plus up to about 8k output tokens.
const ROUND_TOKENS = (1 + rubric.length) * 10000

const GRADE = {
  type: 'object',
  properties: { pass: { type: 'boolean' }, feedback: { type: 'string' } },
  required: ['pass', 'feedback'],
}

const source = file ? await tools.read(file) : ''
const history = []
let answer = null
let feedback = []

for (let attempt = 1; attempt <= maxAttempts; attempt++) {
  if (attempt > 1 && budget.remaining() < ROUND_TOKENS) {
    log(`stopping after ${attempt - 1} attempt(s): ${budget.remaining()} tokens left`)
    break
  }
  phase('Draft')
  const prompt =
    attempt === 1
      ? `${task}\n\nIt will be graded on:\n${rubric.map((c) => `- ${c}`).join('\n')}\n\n${source}`
      : `${task}\n\nYour previous answer:\n${answer}\n\nIt failed these criteria; fix them and keep ` +
        `everything else:\n${feedback.join('\n')}\n\n${source}`
  const draft = await agent(prompt, { label: `draft ${attempt}` })
  if (draft === null) {
    log(`attempt ${attempt}: the writer stopped; keeping the previous answer`)
    break
  }
  answer = draft

  phase('Grade')
  const grades = await parallel(
    rubric.map((criterion, i) => () =>
      agent(
        `Grade this answer strictly against one criterion. Pass it only if it fully meets it; ` +
          `otherwise say exactly what is missing.\n\nCriterion: ${criterion}\n\nAnswer:\n${answer}`,
        { schema: GRADE, model: 'haiku', label: `grade ${attempt}.${i + 1}` },
      ),
    ),
  )
  // A grader that gave no verdict does not pass the criterion.
  const failed = rubric
    .map((criterion, i) => ({ criterion, grade: grades[i] }))
    .filter(({ grade }) => grade === null || !grade.pass)
  history.push({ attempt, passed: rubric.length - failed.length, failed: failed.map((f) => f.criterion) })
  log(`attempt ${attempt}: ${rubric.length - failed.length} of ${rubric.length} criteria met`)
  if (failed.length === 0) {
    return { passed: true, attempts: attempt, answer, history }
  }
  feedback = failed.map(({ criterion, grade }) => `- ${criterion} ${grade?.feedback ?? '(no verdict)'}`)
}

return { passed: false, attempts: history.length, answer, history }
