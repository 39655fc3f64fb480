// Package readmetest holds the test that runs README.md: every ```sh block,
// in order, with bash, against a fresh dev node, failing when an answer
// differs from the one the README shows. It has no code of its own.
//
// How the README is read (the conventions a README edit must keep):
//
//   - The first block is the two commands a newcomer starts with:
//     `go run ./cmd/exactonced --dev` and `make test`. The test checks they
//     are there and, instead of running them, starts a freshly built dev
//     node on free loopback ports in a scratch directory (make test is what
//     runs this test).
//   - A block preceded by `<!-- readme-test: skip: <reason> -->` is not run
//     (it would start processes on fixed ports). Every other block is.
//   - A line `export NAME=...` for a NAME the dev node printed an
//     `export NAME=` line for is replaced by that printed line: the reader
//     pastes what the node printed. Any other `export NAME=<prefix>...` line
//     (`export ACT=act_...`) takes the first `<prefix>` token of the latest
//     answer that has one, as the reader copies an id from the answer above.
//   - A command is its line and its `\` continuation lines; the comment
//     lines right under it are the answer it must give:
//     `# 201 {...}` is a curl answer, the status (printed last by
//     `-w '%{http_code}\n'`) and the body; `# {...}` lines are the JSON
//     values a CLI command prints, one line each, compared compacted;
//     `# error: ...` is the first line a CLI command prints on stderr, with
//     a non-zero exit. Other comments are prose. `...` in an answer matches
//     anything. A command shown with no answer must exit 0.
//   - Commands run in one shell session, in order (variables carry over),
//     in a scratch directory that holds the repository's files.
package readmetest
