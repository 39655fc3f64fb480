package fsm

import "golang.org/x/sys/unix"

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
