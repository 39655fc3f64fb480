//go:build linux

package main

import "syscall"

// restrictUmask makes every file and directory the process creates (state,
// Raft log and snapshots, keys) private to its user: 0600 files, 0700
// directories, whatever the library asked for.
func restrictUmask() { syscall.Umask(0o077) }
