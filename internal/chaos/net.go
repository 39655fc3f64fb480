package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Network places the nodes somewhere reachable and cuts links between them.
type Network interface {
	// Setup creates the network (removing leftovers of a crashed run first).
	Setup(ctx context.Context) error
	// Host is the address node n (1-based) binds and is reached at.
	Host(n int) string
	// Port returns the port for a service ("http", "raft", "gossip") of node n.
	Port(n int, service string) int
	// Command wraps a command so it runs inside node n's network.
	Command(ctx context.Context, n int, name string, args ...string) *exec.Cmd
	// CanPartition reports whether Cut works on this network.
	CanPartition() bool
	// Cut drops every packet from node from to node to (one direction).
	Cut(ctx context.Context, from, to int) error
	// Heal removes every cut.
	Heal(ctx context.Context) error
	// Teardown removes everything Setup created.
	Teardown(ctx context.Context) error
}

// NetNS runs each node in its own Linux network namespace, attached by a
// veth pair to a bridge in the root namespace that holds the harness's
// address. Cuts are iptables DROP rules inside the namespaces. All names
// start with Prefix so that leftovers of a crashed run can be found.
type NetNS struct {
	// Prefix names namespaces (<prefix>-n1), links and the bridge (<prefix>-br).
	Prefix string
	// Subnet is the first three octets of a private /24, e.g. "10.77.0".
	Subnet string
	Nodes  int
	Log    *slog.Logger

	forwardRule bool
}

var _ Network = (*NetNS)(nil)

func (n *NetNS) ns(i int) string     { return fmt.Sprintf("%s-n%d", n.Prefix, i) }
func (n *NetNS) veth(i int) string   { return fmt.Sprintf("%s-v%d", n.Prefix, i) }
func (n *NetNS) bridge() string      { return n.Prefix + "-br" }
func (n *NetNS) harnessAddr() string { return n.Subnet + ".254" }

// Host implements Network.
func (n *NetNS) Host(i int) string { return fmt.Sprintf("%s.%d", n.Subnet, i) }

// Port implements Network: every node uses the same ports in its namespace.
func (n *NetNS) Port(_ int, service string) int { return fixedPort(service) }

// fixedPort is a service's port on a node that has an address of its own
// (a namespace or a container): the server's default ports.
func fixedPort(service string) int {
	switch service {
	case "http":
		return 8080
	case "raft":
		return 8300
	default:
		return 8400
	}
}

// CanPartition implements Network.
func (n *NetNS) CanPartition() bool { return true }

// Command implements Network.
func (n *NetNS) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	// ip netns exec execs the command after entering the namespace, so the
	// process id is the node's own.
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns(i), name}, args...)...)
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Setup implements Network.
func (n *NetNS) Setup(ctx context.Context) error {
	if err := n.Teardown(ctx); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "link", "add", n.bridge(), "type", "bridge"},
		{"ip", "addr", "add", n.harnessAddr() + "/24", "dev", n.bridge()},
		{"ip", "link", "set", n.bridge(), "up"},
	}
	for i := 1; i <= n.Nodes; i++ {
		ns := n.ns(i)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "link", "add", n.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "link", "set", n.veth(i), "master", n.bridge(), "up"},
			[]string{"ip", "netns", "exec", ns, "ip", "addr", "add", n.Host(i) + "/24", "dev", "eth0"},
			[]string{"ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up"},
			[]string{"ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("netns setup: %w", err)
		}
	}
	// With br_netfilter loaded, bridged packets traverse the root FORWARD
	// chain, whose policy may be DROP (e.g. Docker hosts): let ours through.
	if b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil && strings.TrimSpace(string(b)) == "1" {
		if err := run(ctx, "iptables", "-I", "FORWARD", "-i", n.bridge(), "-o", n.bridge(), "-j", "ACCEPT"); err != nil {
			return fmt.Errorf("netns setup: %w", err)
		}
		n.forwardRule = true
	}
	return nil
}

// Cut implements Network.
func (n *NetNS) Cut(ctx context.Context, from, to int) error {
	if err := run(ctx, "ip", "netns", "exec", n.ns(from), "iptables", "-A", "OUTPUT", "-d", n.Host(to), "-j", "DROP"); err != nil {
		return fmt.Errorf("cut node%d->node%d: %w", from, to, err)
	}
	return nil
}

// Heal implements Network.
func (n *NetNS) Heal(ctx context.Context) error {
	var errs []error
	for i := 1; i <= n.Nodes; i++ {
		if err := run(ctx, "ip", "netns", "exec", n.ns(i), "iptables", "-F", "OUTPUT"); err != nil {
			errs = append(errs, fmt.Errorf("heal node%d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// Teardown implements Network. It kills every process still inside one of
// our namespaces (only ours: found by namespace name), then deletes the
// namespaces, veths and the bridge. Missing pieces are not an error.
func (n *NetNS) Teardown(ctx context.Context) error {
	list, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return fmt.Errorf("netns teardown: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], n.Prefix+"-n") {
			continue
		}
		ns := f[0]
		pids, _ := output(ctx, "ip", "netns", "pids", ns)
		for _, p := range strings.Fields(pids) {
			if pid, err := strconv.Atoi(p); err == nil {
				n.Log.Warn("killing leftover process in namespace", "ns", ns, "pid", pid)
				_ = syscall.Kill(pid, syscall.SIGCONT)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		waitGone(ctx, ns)
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	links, _ := output(ctx, "ip", "-o", "link", "show")
	for _, line := range strings.Split(links, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, n.Prefix+"-v") || name == n.bridge() {
			// A veth may vanish with its namespace meanwhile.
			if err := run(ctx, "ip", "link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	if n.forwardRule {
		if err := run(ctx, "iptables", "-D", "FORWARD", "-i", n.bridge(), "-o", n.bridge(), "-j", "ACCEPT"); err != nil {
			errs = append(errs, err)
		}
		n.forwardRule = false
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netns teardown: %w", err)
	}
	return nil
}

// waitGone waits (bounded) until no process is left in namespace ns.
func waitGone(ctx context.Context, ns string) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pids, err := output(ctx, "ip", "netns", "pids", ns)
		if err != nil || strings.TrimSpace(pids) == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Loopback runs every node on 127.0.0.1 with distinct ports. It cannot cut
// links: partition faults are skipped. It is the fallback where network
// namespaces are unavailable (not root, no CAP_NET_ADMIN).
type Loopback struct {
	// BasePort is the first port; node n uses BasePort+n (http),
	// BasePort+100+n (raft) and BasePort+200+n (gossip).
	BasePort int
}

var _ Network = (*Loopback)(nil)

// Setup implements Network.
func (l *Loopback) Setup(context.Context) error { return nil }

// Host implements Network.
func (l *Loopback) Host(int) string { return "127.0.0.1" }

// Port implements Network.
func (l *Loopback) Port(n int, service string) int {
	switch service {
	case "http":
		return l.BasePort + n
	case "raft":
		return l.BasePort + 100 + n
	default:
		return l.BasePort + 200 + n
	}
}

// Command implements Network.
func (l *Loopback) Command(ctx context.Context, _ int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// CanPartition implements Network.
func (l *Loopback) CanPartition() bool { return false }

// Cut implements Network.
func (l *Loopback) Cut(context.Context, int, int) error {
	return errors.New("loopback network cannot cut links")
}

// Heal implements Network.
func (l *Loopback) Heal(context.Context) error { return nil }

// Teardown implements Network.
func (l *Loopback) Teardown(context.Context) error { return nil }
