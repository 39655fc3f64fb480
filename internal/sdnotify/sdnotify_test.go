package sdnotify

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// manager is a fake service manager: it reads the notification socket.
type manager struct {
	conn *net.UnixConn
}

func listen(t *testing.T, name string) *manager {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &manager{conn: conn}
}

// next returns the next datagram, failing the test after a deadline.
func (m *manager) next(t *testing.T) string {
	t.Helper()
	if err := m.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := m.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifyPathSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	m := listen(t, sock)
	n, err := New(sock)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Enabled() {
		t.Fatal("a notifier with a socket reports itself disabled")
	}
	if err := n.Status("waiting for a leader"); err != nil {
		t.Fatal(err)
	}
	if got := m.next(t); got != "STATUS=waiting for a leader\n" {
		t.Errorf("status datagram %q", got)
	}
	if err := n.Ready("serving\nas leader"); err != nil {
		t.Fatal(err)
	}
	if got := m.next(t); got != "READY=1\nSTATUS=serving as leader\n" {
		t.Errorf("ready datagram %q", got)
	}
	if err := n.Stopping("draining"); err != nil {
		t.Fatal(err)
	}
	if got := m.next(t); got != "STOPPING=1\nSTATUS=draining\n" {
		t.Errorf("stopping datagram %q", got)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	name := "@exactonce-sdnotify-test-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + time.Now().Format("150405.000000000")
	m := listen(t, name)
	n, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready("up"); err != nil {
		t.Fatal(err)
	}
	if got := m.next(t); got != "READY=1\nSTATUS=up\n" {
		t.Errorf("ready datagram %q", got)
	}
}

func TestNoSocketSendsNothing(t *testing.T) {
	n, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	if n.Enabled() {
		t.Error("a notifier without a socket reports itself enabled")
	}
	if err := n.Ready("up"); err != nil {
		t.Errorf("Ready without a manager: %v", err)
	}
	var none *Notifier
	if err := none.Stopping("down"); err != nil {
		t.Errorf("Stopping on a nil notifier: %v", err)
	}
}

func TestBadSocketRefused(t *testing.T) {
	for _, s := range []string{"relative/notify.sock", "@", "vsock:2:1234"} {
		if _, err := New(s); !errors.Is(err, ErrBadSocket) {
			t.Errorf("New(%q) = %v, want ErrBadSocket", s, err)
		}
	}
}

func TestManagerGoneIsAnError(t *testing.T) {
	n, err := New(filepath.Join(t.TempDir(), "nobody.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready("up"); err == nil {
		t.Error("Ready to a socket nobody listens on returned nil")
	}
	if err := n.Notify("no assignment"); err == nil {
		t.Error("Notify accepted a line without '='")
	}
}
