//go:build linux

package main

import "golang.org/x/sys/unix"

// diskSpace reports the bytes available to this process and the size of
// the file system holding path (ok false when it cannot be read).
func diskSpace(path string) (avail, size uint64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, false
	}
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	return st.Bavail * unit, st.Blocks * unit, true
}
