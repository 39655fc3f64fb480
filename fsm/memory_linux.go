package fsm

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropMapping tells the kernel this process no longer needs the pages of
// [addr, addr+size) of a shared file mapping (madvise MADV_DONTNEED).
func dropMapping(addr, size uintptr) error {
	if size == 0 {
		return nil
	}
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, size, unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}

// fileResident returns this process's file-backed (and shared-memory)
// resident bytes: the third field of /proc/self/statm, in pages.
func fileResident() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("read statm: %w", err)
	}
	fields := bytes.Fields(b)
	if len(fields) < 3 {
		return 0, fmt.Errorf("statm %q: too few fields", b)
	}
	pages, err := strconv.ParseInt(string(fields[2]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("statm %q: %w", b, err)
	}
	return pages * int64(os.Getpagesize()), nil
}
