//go:build !linux

package main

// restrictUmask does nothing outside Linux, where the server is not
// deployed; files keep the modes their writers ask for.
func restrictUmask() {}
