export const meta = {
  name: 'migrate',
  description: 'Rewrite each source file with an agent, run that file\'s tests on the rewrite, keep the rewrites that pass and drop the others',
  whenToUse: 'A mechanical migration across many files (an API rename, a module-system switch) where every file has its own tests',
  phases: [
    { title: 'Rewrite', detail: 'one agent per file rewrites it as instructed' },
    { title: 'Test', detail: "the file's tests run on the rewrite in Corral's jail; failing rewrites are dropped" },
  ],
}

// args: {
//   files?: glob of the files to migrate (test files are skipped), default 'src/**/*.js'
//   instruction?: what to change
//   test?: { command, args } with '{test}' replaced by the file's test path, default node --test
//   testPath?: how a file's test is named, '{dir}/{name}.test.{ext}' by default
// }
// Needs --allow-write (the rewrites are staged, never written to the root by the run) and
// --allow-run=node (or the command of args.test).
const pattern = args?.files ?? 'src/**/*.js'
const instruction =
  args?.instruction ??
  'Modernise this module: `const` and `let` instead of `var`, template literals instead of string concatenation. Keep its exports and its behaviour exactly.'
const test = args?.test ?? { command: 'node', args: ['--test', '{test}'] }
const testPath = args?.testPath ?? '{dir}/{name}.test.{ext}'

const REWRITE = {
  type: 'object',
  properties: { code: { type: 'string', description: 'the whole new content of the file' } },
  required: ['code'],
}

const testOf = (file) => {
  const slash = file.lastIndexOf('/')
  const dir = slash < 0 ? '.' : file.slice(0, slash)
  const base = file.slice(slash + 1)
  const dot = base.lastIndexOf('.')
  const [name, ext] = dot < 0 ? [base, ''] : [base.slice(0, dot), base.slice(dot + 1)]
  return testPath.replaceAll('{dir}', dir).replaceAll('{name}', name).replaceAll('{ext}', ext)
}

const isTest = (file) => /\.(test|spec)\.[^/]+$/.test(file)
const files = tools.glob(pattern).filter((file) => !isTest(file))
if (files.length === 0) {
  return { pattern, rows: [], kept: [] }
}
log(`migrating ${files.length} file(s) matching ${pattern}`)

phase('Rewrite')
// Each agent sees only its file, so the rewrites are independent and may run at once.
const rewrites = await parallel(
  files.map((file) => () =>
    agent(`${instruction}\n\nThe file is ${file}. Answer with its whole new content.\n\n${tools.read(file)}`, {
      label: `rewrite ${file}`,
      schema: REWRITE,
    }),
  ),
)

phase('Test')
// One at a time: each test run sees the rewrite of its own file and the original of the others.
const rows = []
for (const [i, file] of files.entries()) {
  const rewrite = rewrites[i]
  const testFile = testOf(file)
  if (rewrite === null) {
    rows.push({ file, test: testFile, testsPassed: false, kept: false, note: 'the agent failed' })
    continue
  }
  tools.write(file, rewrite.code)
  let result
  try {
    result = tools.run(
      test.command,
      test.args.map((arg) => arg.replaceAll('{test}', testFile)),
      { timeoutMs: 60000 },
    )
  } catch (error) {
    // A test that hangs past its time or floods its output counts as failing; anything else
    // (no --allow-run, no bubblewrap) is a mistake in how the run was started.
    if (error.code !== 'limit') throw error
    result = { code: -1, stdout: '', stderr: String(error) }
  }
  const testsPassed = result.code === 0
  if (!testsPassed) {
    tools.revert(file)
    log(`${file}: its tests failed on the rewrite, which is dropped\n${result.stdout}${result.stderr}`.trimEnd())
  }
  rows.push({ file, test: testFile, testsPassed, kept: testsPassed })
}

return { pattern, rows, kept: tools.changes().map((change) => change.path) }
