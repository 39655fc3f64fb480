//go:build !chaosbug

package fsm

// chaosBugSkipConsumedCheck is false in every real build. The build tag
// "chaosbug" turns it on (chaosbug_on.go) so that the chaos harness can show
// that its checker catches a double consume; see docs/chaos.md.
const chaosBugSkipConsumedCheck = false
