//go:build !linux

package fsm

// dropMapping is a no-op where madvise is not used.
func dropMapping(addr, size uintptr) error { return nil }

// fileResident reports nothing resident where it is not measured: with
// dropMapping a no-op there is nothing to trim.
func fileResident() (int64, error) { return 0, nil }
