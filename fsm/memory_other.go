//go:build !linux

package fsm

// dropMapping is a no-op where madvise is not used.
func dropMapping(addr, size uintptr) error { return nil }
