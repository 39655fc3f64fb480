package faultfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// entry is one name in a directory as the disk holds it.
type entry struct {
	id     int64
	mode   uint32 // st_mode: file type and permissions
	target string // a symlink's target
}

// fileState is what the filesystem knows about one regular file (an inode,
// named by an id of the filesystem's own, since the backing filesystem may
// reuse inode numbers once a file is gone).
type fileState struct {
	// baseline: the file existed when the filesystem was mounted; its
	// content then is durable until the file is first changed.
	baseline bool
	// shadow: <dir>/shadow/<id> holds the file's durable content. A
	// baseline file gets one (a copy) before its first change, a new file
	// at its first fsync; without one a new file's durable content is
	// empty.
	shadow bool
	// orphan: <dir>/orphans/<id> is a hard link to the unchanged baseline
	// inode, kept because its last name was removed while an older state
	// of a directory still names it.
	orphan bool
	// ino is the live inode number, 0 once no name is left.
	ino uint64
	// dirty are the ranges written since the last fsync.
	dirty spans
	// truncFrom is the smallest size a truncation set since the last
	// fsync, -1 when none did.
	truncFrom int64
}

// pendingRename links two directories a rename moved a name between:
// journaling filesystems commit a rename as one transaction, so an fsync
// of either directory makes both sides of it durable.
type pendingRename struct {
	a, b *gofs.Inode
}

// model is the durable state of the filesystem next to its live state:
// the live tree is an ordinary directory (the page cache, so to speak);
// the model knows, for every file, what part of it an fsync made durable
// and, for every directory, the names its last fsync made durable. A
// power loss rebuilds the live tree from the model alone.
type model struct {
	live, shadowDir, orphanDir string

	// gen changes at every reset, when ids are given anew.
	gen     int64
	next    int64
	rootID  int64
	byIno   map[uint64]int64
	files   map[int64]*fileState
	dirs    map[int64]map[string]entry
	pending []pendingRename
}

func newModel(dir string) *model {
	return &model{
		live:      filepath.Join(dir, "live"),
		shadowDir: filepath.Join(dir, "shadow"),
		orphanDir: filepath.Join(dir, "orphans"),
	}
}

func (m *model) shadowPath(id int64) string {
	return filepath.Join(m.shadowDir, strconv.FormatInt(id, 10))
}
func (m *model) orphanPath(id int64) string {
	return filepath.Join(m.orphanDir, strconv.FormatInt(id, 10))
}

// reset forgets everything and takes the live tree as it is as durable
// (what a freshly mounted disk holds is on the disk).
func (m *model) reset() error {
	for _, d := range []string{m.shadowDir, m.orphanDir} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("faultfs: reset %s: %w", d, err)
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("faultfs: reset %s: %w", d, err)
		}
	}
	if err := os.MkdirAll(m.live, 0o755); err != nil {
		return fmt.Errorf("faultfs: live dir: %w", err)
	}
	m.gen++
	m.next, m.pending = 0, nil
	m.byIno = map[uint64]int64{}
	m.files = map[int64]*fileState{}
	m.dirs = map[int64]map[string]entry{}
	var st unix.Stat_t
	if err := unix.Lstat(m.live, &st); err != nil {
		return fmt.Errorf("faultfs: stat %s: %w", m.live, err)
	}
	m.rootID = m.idFor(st.Ino)
	return m.scanDir(m.live, m.rootID)
}

func (m *model) scanDir(path string, id int64) error {
	l, err := m.listing(path, true)
	if err != nil {
		return err
	}
	m.dirs[id] = l
	for name, e := range l {
		if e.mode&unix.S_IFMT == unix.S_IFDIR {
			if err := m.scanDir(filepath.Join(path, name), e.id); err != nil {
				return err
			}
		}
	}
	return nil
}

// idFor returns the id of the live inode ino, giving it a new one when it
// has none.
func (m *model) idFor(ino uint64) int64 {
	if id, ok := m.byIno[ino]; ok {
		return id
	}
	return m.fresh(ino)
}

// fresh gives the live inode ino a new id: a file just created.
func (m *model) fresh(ino uint64) int64 {
	m.next++
	m.byIno[ino] = m.next
	return m.next
}

// file returns the state of the regular file id.
func (m *model) file(id int64) *fileState {
	f, ok := m.files[id]
	if !ok {
		f = &fileState{truncFrom: -1}
		m.files[id] = f
	}
	return f
}

// idOfPath returns the id of the live file or directory at path.
func (m *model) idOfPath(path string) (int64, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return 0, st, err
	}
	id := m.idFor(st.Ino)
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		m.file(id).ino = st.Ino
	}
	return id, st, nil
}

// listing reads the live directory at path as a set of entries.
func (m *model) listing(path string, baseline bool) (map[string]entry, error) {
	des, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("faultfs: list %s: %w", path, err)
	}
	out := make(map[string]entry, len(des))
	for _, de := range des {
		p := filepath.Join(path, de.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("faultfs: stat %s: %w", p, err)
		}
		e := entry{id: m.idFor(st.Ino), mode: st.Mode}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			f := m.file(e.id)
			f.ino = st.Ino
			if baseline {
				f.baseline = true
			}
		case unix.S_IFLNK:
			if e.target, err = os.Readlink(p); err != nil {
				return nil, fmt.Errorf("faultfs: readlink %s: %w", p, err)
			}
		case unix.S_IFDIR:
		default:
			continue // devices, fifos, sockets: not kept across a power loss
		}
		out[de.Name()] = e
	}
	return out, nil
}

// preserve saves the baseline content of file id before its first
// change: src is a readable path to the live inode.
func (m *model) preserve(id int64, src string) error {
	f := m.file(id)
	if !f.baseline || f.shadow {
		return nil
	}
	if f.orphan {
		src = m.orphanPath(id)
	}
	if err := copySparse(src, m.shadowPath(id)); err != nil {
		return fmt.Errorf("faultfs: preserve file %d: %w", id, err)
	}
	f.shadow = true
	if f.orphan {
		_ = os.Remove(m.orphanPath(id))
		f.orphan = false
	}
	return nil
}

// truncated records a truncation (or extension) of file id to size.
func (m *model) truncated(id int64, size int64) {
	f := m.file(id)
	if f.truncFrom < 0 || size < f.truncFrom {
		f.truncFrom = size
	}
}

// sync makes file id's content durable: the shadow takes the live file's
// size and every range written since the last sync. src is a readable
// path to the live inode.
func (m *model) sync(id int64, src string) error {
	f := m.file(id)
	if f.baseline && !f.shadow {
		return nil // unchanged since the mount
	}
	if f.shadow && len(f.dirty) == 0 && f.truncFrom < 0 {
		return nil
	}
	live, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("faultfs: sync file %d: %w", id, err)
	}
	defer live.Close()
	lst, err := live.Stat()
	if err != nil {
		return fmt.Errorf("faultfs: sync file %d: %w", id, err)
	}
	sh, err := os.OpenFile(m.shadowPath(id), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("faultfs: sync file %d: %w", id, err)
	}
	defer sh.Close()
	sst, err := sh.Stat()
	if err != nil {
		return fmt.Errorf("faultfs: sync file %d: %w", id, err)
	}
	// Bytes past a truncation that no write covered read as zeros in
	// the live file: cut the shadow there, then give it the live size.
	if f.truncFrom >= 0 && f.truncFrom < sst.Size() {
		if err := sh.Truncate(f.truncFrom); err != nil {
			return fmt.Errorf("faultfs: sync file %d: %w", id, err)
		}
	}
	if err := sh.Truncate(lst.Size()); err != nil {
		return fmt.Errorf("faultfs: sync file %d: %w", id, err)
	}
	for _, r := range f.dirty {
		end := min(r.end, lst.Size())
		if r.off >= end {
			continue
		}
		if _, err := io.Copy(io.NewOffsetWriter(sh, r.off), io.NewSectionReader(live, r.off, end-r.off)); err != nil {
			return fmt.Errorf("faultfs: sync file %d: %w", id, err)
		}
	}
	f.shadow, f.dirty, f.truncFrom = true, nil, -1
	return nil
}

// drop forgets file id's unsynced changes without making them durable:
// what Linux does to dirty pages whose writeback failed (they are marked
// clean, so a later fsync succeeds without writing them).
func (m *model) drop(id int64) {
	f := m.file(id)
	f.dirty, f.truncFrom = nil, -1
}

// removing is called before the name at path goes away (unlink, rmdir,
// rename over it). It returns a function to call with the outcome.
func (m *model) removing(path string) func(ok bool) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return func(bool) {}
	}
	id, known := m.byIno[st.Ino]
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return func(ok bool) {
			if ok {
				delete(m.byIno, st.Ino)
			}
		}
	case st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink > 1 || !known:
		return func(bool) {}
	}
	f := m.file(id)
	linked := false
	if f.baseline && !f.shadow && !f.orphan {
		// Some older state of a directory may still name the file: keep
		// its unchanged inode reachable (cheaper than a copy).
		if err := os.Link(path, m.orphanPath(id)); err == nil {
			f.orphan, linked = true, true
		} else if err := m.preserve(id, path); err != nil {
			return func(bool) {}
		}
	}
	return func(ok bool) {
		if !ok {
			if linked {
				_ = os.Remove(m.orphanPath(id))
				f.orphan = false
			}
			return
		}
		delete(m.byIno, st.Ino)
		f.ino = 0
	}
}

// syncDirs makes the live names of the directories at paths (id → path)
// durable.
func (m *model) syncDirs(paths map[int64]string) error {
	for id, p := range paths {
		l, err := m.listing(p, false)
		if err != nil {
			return err
		}
		m.dirs[id] = l
	}
	return nil
}

// Report says what a power loss dropped.
type Report struct {
	// Files is the number of files whose unsynced writes or truncations
	// were dropped; Bytes the bytes those writes covered.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Dirs is the number of directories whose names were rolled back
	// (creations, removals, renames not made durable).
	Dirs int `json:"dirs"`
}

// report counts what the live tree holds beyond the durable state.
func (m *model) report() Report {
	var r Report
	for _, f := range m.files {
		if len(f.dirty) > 0 || f.truncFrom >= 0 {
			r.Files++
			r.Bytes += f.dirty.bytes()
		}
	}
	_ = filepath.WalkDir(m.live, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		id, ok := m.byIno[st.Ino]
		if !ok {
			r.Dirs++
			return nil
		}
		l, err := m.listing(p, false)
		if err == nil && !sameNames(l, m.dirs[id]) {
			r.Dirs++
		}
		return nil
	})
	return r
}

func sameNames(a, b map[string]entry) bool {
	if len(a) != len(b) {
		return false
	}
	for k, e := range a {
		if f, ok := b[k]; !ok || f.id != e.id {
			return false
		}
	}
	return true
}

// rebuild replaces the live tree by the durable state: the names each
// directory's last fsync recorded, each file with its last synced
// content. The filesystem must not be mounted.
func (m *model) rebuild(dir string) error {
	inoPath := map[uint64]string{}
	_ = filepath.WalkDir(m.live, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			var st unix.Stat_t
			if unix.Lstat(p, &st) == nil {
				inoPath[st.Ino] = p
			}
		}
		return nil
	})
	next := filepath.Join(dir, "next")
	if err := os.RemoveAll(next); err != nil {
		return fmt.Errorf("faultfs: rebuild: %w", err)
	}
	if err := os.Mkdir(next, 0o755); err != nil {
		return fmt.Errorf("faultfs: rebuild: %w", err)
	}
	built := map[int64]string{}
	seen := map[int64]bool{m.rootID: true}
	var build func(id int64, path string) error
	build = func(id int64, path string) error {
		l := m.dirs[id]
		names := make([]string, 0, len(l))
		for n := range l {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			e, p := l[name], filepath.Join(path, name)
			perm := os.FileMode(e.mode & 0o7777)
			switch e.mode & unix.S_IFMT {
			case unix.S_IFDIR:
				if seen[e.id] {
					continue
				}
				seen[e.id] = true
				if err := os.Mkdir(p, perm); err != nil {
					return fmt.Errorf("faultfs: rebuild: %w", err)
				}
				if err := build(e.id, p); err != nil {
					return err
				}
			case unix.S_IFLNK:
				if err := os.Symlink(e.target, p); err != nil {
					return fmt.Errorf("faultfs: rebuild: %w", err)
				}
			case unix.S_IFREG:
				if first, ok := built[e.id]; ok {
					if err := os.Link(first, p); err != nil {
						return fmt.Errorf("faultfs: rebuild: %w", err)
					}
					continue
				}
				src, err := m.durableSource(e.id, inoPath)
				if err != nil {
					return err
				}
				if src == "" {
					err = os.WriteFile(p, nil, perm)
				} else {
					err = copySparse(src, p)
				}
				if err == nil {
					err = os.Chmod(p, perm)
				}
				if err != nil {
					return fmt.Errorf("faultfs: rebuild: %w", err)
				}
				built[e.id] = p
			}
		}
		return nil
	}
	if err := build(m.rootID, next); err != nil {
		return err
	}
	old := filepath.Join(dir, "old")
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("faultfs: rebuild: %w", err)
	}
	if err := os.Rename(m.live, old); err != nil {
		return fmt.Errorf("faultfs: rebuild: %w", err)
	}
	if err := os.Rename(next, m.live); err != nil {
		return fmt.Errorf("faultfs: rebuild: %w", err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("faultfs: rebuild: %w", err)
	}
	return nil
}

// durableSource is a path holding file id's durable content, "" for empty.
func (m *model) durableSource(id int64, inoPath map[uint64]string) (string, error) {
	f := m.files[id]
	switch {
	case f == nil:
		return "", nil
	case f.shadow:
		return m.shadowPath(id), nil
	case !f.baseline:
		return "", nil
	case f.orphan:
		return m.orphanPath(id), nil
	}
	if p, ok := inoPath[f.ino]; ok && f.ino != 0 {
		return p, nil
	}
	return "", fmt.Errorf("faultfs: rebuild: the durable content of file %d is lost (inode %d)", id, f.ino)
}

// copySparse copies the file src to dst (created or truncated), skipping
// holes, so that a preallocated log segment costs only its data.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	size := st.Size()
	var off int64
	for off < size {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			// No SEEK_DATA: copy everything.
			data = off
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			out.Close()
			return err
		}
		off = hole
	}
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// toEnd is the end of a range that runs to the end of the file.
const toEnd = math.MaxInt64
