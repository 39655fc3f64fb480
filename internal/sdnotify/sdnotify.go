// Package sdnotify tells the service manager about the service's state
// through the sd_notify protocol (sd_notify(3)): one datagram of
// newline-separated KEY=VALUE assignments sent to the Unix socket named by
// $NOTIFY_SOCKET. systemd waits for READY=1 before it considers a
// Type=notify unit started, and shows STATUS= in `systemctl status`.
//
// The protocol is small enough to speak directly; doing so keeps the socket
// path an argument (tests run a fake manager in parallel) instead of a
// process-wide environment variable.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// EnvSocket is the environment variable through which the service manager
// names its notification socket.
const EnvSocket = "NOTIFY_SOCKET"

// Notifier sends state changes to the service manager. The zero value and a
// nil *Notifier send nothing (the process was not started by a manager
// that listens), so callers never need to check.
type Notifier struct {
	addr *net.UnixAddr
}

// ErrBadSocket is wrapped by New for a $NOTIFY_SOCKET it cannot use.
var ErrBadSocket = errors.New("sdnotify: unusable notification socket")

// New returns a Notifier for socket, the value of $NOTIFY_SOCKET: an
// absolute path, or an abstract socket name starting with '@'. An empty
// socket gives a Notifier that sends nothing.
func New(socket string) (*Notifier, error) {
	switch {
	case socket == "":
		return &Notifier{}, nil
	case strings.HasPrefix(socket, "/"):
		return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
	case strings.HasPrefix(socket, "@") && len(socket) > 1:
		// Go names an abstract socket with '@' in place of the leading NUL.
		return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
	default:
		// vsock: addresses (systemd 253 for VMs) are not supported here.
		return nil, fmt.Errorf("%w: %s=%q: want an absolute path or an @abstract name", ErrBadSocket, EnvSocket, socket)
	}
}

// Enabled reports whether a service manager listens for notifications.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Notify sends the assignments (e.g. "READY=1", "STATUS=serving") as one
// datagram. It does nothing when no manager listens.
func (n *Notifier) Notify(assignments ...string) error {
	if !n.Enabled() || len(assignments) == 0 {
		return nil
	}
	for _, a := range assignments {
		if !strings.Contains(a, "=") || strings.Contains(a, "\n") {
			return fmt.Errorf("sdnotify: %q is not one KEY=VALUE assignment", a)
		}
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: dial %s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("sdnotify: send to %s: %w", n.addr.Name, err)
	}
	return nil
}

// Ready tells the manager that the service is up and serving, with a
// human-readable status line.
func (n *Notifier) Ready(status string) error {
	return n.Notify("READY=1", "STATUS="+oneLine(status))
}

// Stopping tells the manager that the service has begun to shut down.
func (n *Notifier) Stopping(status string) error {
	return n.Notify("STOPPING=1", "STATUS="+oneLine(status))
}

// Status updates the status line `systemctl status` shows.
func (n *Notifier) Status(status string) error {
	return n.Notify("STATUS=" + oneLine(status))
}

// oneLine keeps a status to one line: a newline would start a new
// assignment.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
