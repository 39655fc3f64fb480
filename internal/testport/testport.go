// Package testport hands tests loopback ports that stay free long enough to
// bind: the node under test binds them itself, so a port is picked, checked
// and released, which is only safe outside the kernel's ephemeral range.
package testport

import (
	"net"
	"os"
	"strconv"
	"sync/atomic"
)

// TB is the part of testing.TB that Free uses, so that code outside a
// test (a runnable example's node) can ask for a port too.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// next walks the ports of this process.
var next atomic.Int64

// Free returns a loopback address ("127.0.0.1:port") free for TCP and UDP
// (gossip uses both) a moment ago. Ports come from 25000-32767, below
// Linux's ephemeral range (32768-60999): a port taken from that range and
// closed can be grabbed by any outgoing connection before the node binds it,
// which made tests fail with "address already in use". They stay above
// 18000-24999, where make bench and make chaos put their clusters, so that
// tests can run beside them. Each process starts
// at an offset derived from its pid, so parallel test binaries rarely meet,
// and never hands out a port twice.
func Free(t TB) string {
	t.Helper()
	const lo, span = 25000, 7768
	next.CompareAndSwap(0, int64(os.Getpid()*131%span)+1)
	for range span {
		port := lo + int(next.Add(1))%span
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = u.Close()
		return addr
	}
	t.Fatal("testport: no free loopback port in 25000-32767")
	return ""
}
