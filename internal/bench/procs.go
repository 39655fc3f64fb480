package bench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one child process started by the harness: a server node, an
// etcd member or a PostgreSQL postmaster. It dies with the harness
// (Pdeathsig) and is stopped by Stop.
type Proc struct {
	Name    string
	Bin     string
	Args    []string
	Env     []string
	LogPath string
	// Dir is the working directory ("" for the harness's own).
	Dir string
	// Cred, when set, runs the process as another OS user (PostgreSQL
	// refuses to run as root).
	Cred *syscall.Credential
	// StopSignal asks the process to stop (default SIGTERM; PostgreSQL's
	// fast shutdown is SIGINT: SIGTERM would wait for clients to leave).
	StopSignal syscall.Signal
	// Tree makes CPUTime count the process's descendants too (PostgreSQL
	// serves each connection from a child process), living and reaped.
	Tree   bool
	cmd    *exec.Cmd
	exited chan struct{}
	logf   *os.File
}

// Start launches the process with output appended to LogPath.
func (p *Proc) Start() error {
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log for %s: %w", p.Name, err)
	}
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.Dir
	// Go sets the parent-death signal after switching credentials, so it
	// survives the switch (the kernel clears it on a change of user).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: p.Cred}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.logf = cmd, f
	p.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return nil
}

// Pid returns the process id, 0 when not running.
func (p *Proc) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// CPUTime returns the CPU time (user+system) the process has used, read
// from /proc/<pid>/stat; 0 when it is not running or not on Linux.
func (p *Proc) CPUTime() time.Duration {
	pid := p.Pid()
	if pid == 0 {
		return 0
	}
	if p.Tree {
		return treeCPU(pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return parseStatCPU(string(b))
}

// parseStatCPU returns utime+stime from the text of /proc/<pid>/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted after its closing parenthesis; utime and stime are fields 14 and
// 15, in USER_HZ ticks, which Linux fixes at 100 per second for user space.
func parseStatCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procStat is what treeCPU needs of /proc/<pid>/stat.
type procStat struct {
	ppid int
	// cpu is utime+stime+cutime+cstime: the process's own CPU time and
	// that of its children it has waited for; reaped is cutime+cstime.
	cpu, reaped time.Duration
}

// parseStat reads the parent pid (field 4) and utime, stime, cutime and
// cstime (fields 14-17, USER_HZ ticks) from the text of /proc/<pid>/stat.
func parseStat(stat string) (procStat, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	var ticks [4]uint64
	for i, v := range f[11:15] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return procStat{}, false
		}
		ticks[i] = n
	}
	tick := 10 * time.Millisecond
	return procStat{ppid: ppid, cpu: time.Duration(ticks[0]+ticks[1]+ticks[2]+ticks[3]) * tick,
		reaped: time.Duration(ticks[2]+ticks[3]) * tick}, true
}

// treeCPU returns the CPU time of pid and of every descendant: each one's
// own time plus that of the children it has reaped (a PostgreSQL backend
// that exited is counted in the postmaster's cutime, a living one in its
// own utime and stime). A child reaped while /proc is being read would be
// counted nowhere (its stat gone, the postmaster's read before), so the
// read is repeated when the root reaped anything meanwhile. 0 when /proc
// cannot be read.
func treeCPU(pid int) time.Duration {
	var sum time.Duration
	for range 5 {
		before, ok := readStat(pid)
		if !ok {
			return 0
		}
		sum = treeCPUOnce(pid)
		if after, ok := readStat(pid); !ok || after.reaped == before.reaped {
			break
		}
	}
	return sum
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	return parseStat(string(b))
}

// treeCPUOnce reads every process's stat once and sums pid's tree.
func treeCPUOnce(pid int) time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	stats := map[int]procStat{}
	children := map[int][]int{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		if st, ok := parseStat(string(b)); ok {
			stats[n] = st
			children[st.ppid] = append(children[st.ppid], n)
		}
	}
	return sumTree(pid, stats, children)
}

// sumTree adds the CPU of pid and its descendants.
func sumTree(pid int, stats map[int]procStat, children map[int][]int) time.Duration {
	var sum time.Duration
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if st, ok := stats[p]; ok {
			sum += st.cpu
		}
		stack = append(stack, children[p]...)
	}
	return sum
}

// cpuOf returns a function summing the CPU time of procs.
func cpuOf(procs []*Proc) func() time.Duration {
	return func() time.Duration {
		var sum time.Duration
		for _, p := range procs {
			sum += p.CPUTime()
		}
		return sum
	}
}

// Running reports whether the process has been started and not exited.
func (p *Proc) Running() bool {
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and, after grace, SIGKILL; it waits for the exit.
func (p *Proc) Stop(grace time.Duration) {
	if !p.Running() {
		return
	}
	sig := p.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Mem is a process's memory use from /proc/<pid>/status.
type Mem struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM (peak RSS), bytes
	Anon int64 // RssAnon (heap, stacks), bytes
	File int64 // RssFile (mapped files such as bbolt's mmap), bytes
}

// ReadMem reads VmRSS and VmHWM of pid.
func ReadMem(pid int) (Mem, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Mem{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	var m Mem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			m.RSS = kb << 10
		case "VmHWM:":
			m.Peak = kb << 10
		case "RssAnon:":
			m.Anon = kb << 10
		case "RssFile:":
			m.File = kb << 10
		}
	}
	return m, sc.Err()
}

// portFree reports whether addr can be listened on now.
func portFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("address %s is in use (another cluster running?): %w", addr, err)
	}
	return l.Close()
}

// waitHTTP polls url until it answers 200, the process exits or ctx ends.
func waitHTTP(ctx context.Context, p *Proc, url string) error {
	c := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", url, err)
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p != nil && !p.Running() {
			return fmt.Errorf("%s exited while waiting for %s (log %s)", p.Name, url, p.LogPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", url, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tailFile returns the last n lines of path, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// stopAll stops procs in parallel, killing any still running after grace.
func stopAll(log *slog.Logger, procs []*Proc, grace time.Duration) {
	done := make(chan struct{}, len(procs))
	for _, p := range procs {
		go func() {
			p.Stop(grace)
			done <- struct{}{}
		}()
	}
	for range procs {
		<-done
	}
	log.Debug("processes stopped", "count", len(procs))
}

// mkTemp creates a fresh directory for a cluster's data.
func mkTemp(base, pattern string) (string, error) {
	if base != "" {
		if err := os.MkdirAll(base, 0o700); err != nil {
			return "", fmt.Errorf("create %s: %w", base, err)
		}
	}
	d, err := os.MkdirTemp(base, pattern)
	if err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	return d, nil
}

// dirSize sums file sizes under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
