//go:build !linux

package main

// diskSpace is not implemented outside Linux, where the server is not
// deployed: the file system gauges are left out.
func diskSpace(string) (avail, size uint64, ok bool) { return 0, 0, false }
