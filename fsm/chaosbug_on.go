//go:build chaosbug

package fsm

// chaosBugSkipConsumedCheck, in a build with the "chaosbug" tag only, skips
// the already-consumed check so that a consumed action can be consumed again.
// It exists to prove the chaos harness's checker can fail (make
// chaos-selftest); never ship such a build.
const chaosBugSkipConsumedCheck = true
