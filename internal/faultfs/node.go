package faultfs

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a loopback node whose changes to the tree are recorded in the
// model. Lookups, reads and attributes are the loopback's own.
type node struct {
	*gofs.LoopbackNode
	ffs *FS
}

var (
	_ gofs.NodeWrapChilder    = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeTmpfiler       = (*node)(nil)
	_ gofs.NodeCopyFileRanger = (*node)(nil)
	_ gofs.FileFsyncdirer     = (*dirHandle)(nil)
	_ gofs.FileWriter         = (*handle)(nil)
	_ gofs.FileWritever       = (*handle)(nil)
	_ gofs.FileFsyncer        = (*handle)(nil)
	_ gofs.FileSetattrer      = (*handle)(nil)
	_ gofs.FileAllocater      = (*handle)(nil)
	_ gofs.FileReader         = (*handle)(nil)
	_ gofs.FileReleaser       = (*handle)(nil)
	_ gofs.FileFlusher        = (*handle)(nil)
	_ gofs.FileGetattrer      = (*handle)(nil)
	_ gofs.FileLseeker        = (*handle)(nil)
)

// WrapChild makes every node of the tree a faultfs node.
func (n *node) WrapChild(_ context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*gofs.LoopbackNode), ffs: n.ffs}
}

// backing is the node's path in the live tree.
func (n *node) backing() string { return filepath.Join(n.ffs.m.live, n.Path(nil)) }

// registerNew gives the file just created at path an id of its own (its
// inode number may have belonged to a file removed before).
func (n *node) registerNew(path string) {
	var st unix.Stat_t
	if unix.Lstat(path, &st) == nil {
		n.ffs.m.fresh(st.Ino)
	}
}

// Create implements gofs.NodeCreater.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	p := filepath.Join(n.backing(), name)
	id, st, err := f.m.idOfPath(p)
	existed := err == nil
	if existed && flags&syscall.O_TRUNC != 0 && st.Mode&unix.S_IFMT == unix.S_IFREG {
		if errno := f.truncating(id, p, st.Size, 0); errno != 0 {
			return nil, nil, 0, errno
		}
	}
	ch, fh, ff, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if !existed {
		n.registerNew(p)
	}
	h, errno := f.newHandle(fh)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, h, ff, 0
}

// Open implements gofs.NodeOpener.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		p := n.backing()
		id, st, err := f.m.idOfPath(p)
		if err != nil {
			return nil, 0, gofs.ToErrno(err)
		}
		if errno := f.truncating(id, p, st.Size, 0); errno != 0 {
			return nil, 0, errno
		}
	}
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	h, errno := f.newHandle(fh)
	return h, ff, errno
}

// Setattr implements gofs.NodeSetattrer: a truncation by path is
// recorded (one through an open file goes to handle.Setattr).
func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && fh == nil {
		f := n.ffs
		f.mu.Lock()
		p := n.backing()
		id, st, err := f.m.idOfPath(p)
		if err != nil {
			f.mu.Unlock()
			return gofs.ToErrno(err)
		}
		errno := f.truncating(id, p, st.Size, int64(sz))
		if errno == 0 {
			errno = n.LoopbackNode.Setattr(ctx, nil, in, out)
		}
		f.mu.Unlock()
		return errno
	}
	return n.LoopbackNode.Setattr(ctx, fh, in, out)
}

// Unlink implements gofs.NodeUnlinker.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	done := f.m.removing(filepath.Join(n.backing(), name))
	errno := n.LoopbackNode.Unlink(ctx, name)
	done(errno == 0)
	return errno
}

// Rmdir implements gofs.NodeRmdirer.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	done := f.m.removing(filepath.Join(n.backing(), name))
	errno := n.LoopbackNode.Rmdir(ctx, name)
	done(errno == 0)
	return errno
}

// Rename implements gofs.NodeRenamer. A rename between two directories
// is linked to both, so that an fsync of either makes it durable whole.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	done := func(bool) {}
	if flags&unix.RENAME_EXCHANGE == 0 {
		done = f.m.removing(filepath.Join(np.backing(), newName))
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	done(errno == 0)
	if errno == 0 && n.EmbeddedInode() != np.EmbeddedInode() {
		f.m.pending = append(f.m.pending, pendingRename{a: n.EmbeddedInode(), b: np.EmbeddedInode()})
	}
	return errno
}

// Mkdir implements gofs.NodeMkdirer.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno == 0 {
		n.registerNew(filepath.Join(n.backing(), name))
	}
	return ch, errno
}

// Mknod implements gofs.NodeMknoder.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno == 0 {
		n.registerNew(filepath.Join(n.backing(), name))
	}
	return ch, errno
}

// Symlink implements gofs.NodeSymlinker.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := n.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	if errno == 0 {
		n.registerNew(filepath.Join(n.backing(), name))
	}
	return ch, errno
}

// Tmpfile implements gofs.NodeTmpfiler: unnamed files are not supported
// (callers fall back to named ones).
func (n *node) Tmpfile(context.Context, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// CopyFileRange implements gofs.NodeCopyFileRanger: not supported, so
// the kernel copies by reads and writes, which are recorded.
func (n *node) CopyFileRange(context.Context, gofs.FileHandle, uint64, *gofs.Inode, gofs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

// OpendirHandle implements gofs.NodeOpendirHandler with a handle whose
// fsync makes the directory's names durable.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, ff, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	ds, ok := fh.(loopDir)
	if !ok {
		return nil, 0, syscall.EIO
	}
	return &dirHandle{loopDir: ds, n: n}, ff, 0
}

// loopDir is what the loopback's directory stream implements.
type loopDir interface {
	gofs.FileReaddirenter
	gofs.FileSeekdirer
	gofs.FileReleasedirer
}

// dirHandle is an open directory.
type dirHandle struct {
	loopDir
	n *node
}

// Fsyncdir implements gofs.FileFsyncdirer: the directory's live names
// (and those of any directory a rename links it to) become durable.
func (d *dirHandle) Fsyncdir(ctx context.Context, _ uint32) syscall.Errno {
	f := d.n.ffs
	f.delay(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.DirFsyncs++
	if failing(&f.failFsync) {
		f.stats.FailedFsyncs++
		return syscall.EIO
	}
	// The directory, and every directory a pending rename links to it
	// (transitively): those renames become durable whole.
	group := map[*gofs.Inode]bool{d.n.EmbeddedInode(): true}
	for grew := true; grew; {
		grew = false
		for _, pr := range f.m.pending {
			if group[pr.a] != group[pr.b] {
				group[pr.a], group[pr.b], grew = true, true, true
			}
		}
	}
	kept := f.m.pending[:0]
	for _, pr := range f.m.pending {
		if !group[pr.a] {
			kept = append(kept, pr)
		}
	}
	f.m.pending = kept
	paths := map[int64]string{}
	for in := range group {
		p := filepath.Join(f.m.live, in.Path(nil))
		id, st, err := f.m.idOfPath(p)
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue // removed since: it has no live names to keep
		}
		paths[id] = p
	}
	if err := f.m.syncDirs(paths); err != nil {
		f.log.Warn("faultfs: directory fsync", "err", err)
		return syscall.EIO
	}
	return 0
}

// handle is an open file; its writes, truncations and fsyncs go through
// the model and the injected faults.
type handle struct {
	lf  *gofs.LoopbackFile
	ffs *FS
	fd  int
	id  int64
	gen int64
}

// newHandle wraps a loopback file; f.mu must be held.
func (f *FS) newHandle(fh gofs.FileHandle) (*handle, syscall.Errno) {
	lf, ok := fh.(*gofs.LoopbackFile)
	if !ok {
		return nil, syscall.EIO
	}
	fd, ok := lf.PassthroughFd()
	if !ok {
		return nil, syscall.EBADF
	}
	h := &handle{lf: lf, ffs: f, fd: fd}
	h.resolve()
	f.open++
	return h, 0
}

// resolve finds the file's id (again after the model was reset); f.mu
// must be held.
func (h *handle) resolve() int64 {
	m := h.ffs.m
	if h.gen != m.gen || h.id == 0 {
		var st unix.Stat_t
		if unix.Fstat(h.fd, &st) == nil {
			h.id = m.idFor(st.Ino)
			m.file(h.id).ino = st.Ino
		}
		h.gen = m.gen
	}
	return h.id
}

// src is a readable path to the open file, whatever its open mode.
func (h *handle) src() string { return fmt.Sprintf("/proc/self/fd/%d", h.fd) }

// size is the open file's current size.
func (h *handle) size() (int64, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstat(h.fd, &st); err != nil {
		return 0, gofs.ToErrno(err)
	}
	return st.Size, 0
}

// Read implements gofs.FileReader.
func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, buf, off)
}

// Release implements gofs.FileReleaser.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	errno := h.lf.Release(ctx)
	h.ffs.mu.Lock()
	h.ffs.open--
	h.ffs.mu.Unlock()
	return errno
}

// Flush implements gofs.FileFlusher.
func (h *handle) Flush(ctx context.Context) syscall.Errno { return h.lf.Flush(ctx) }

// Getattr implements gofs.FileGetattrer.
func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}

// Lseek implements gofs.FileLseeker.
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}

// Writev implements gofs.FileWritever (the kernel may split a write).
func (h *handle) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	var all []byte
	for _, d := range data {
		all = append(all, d...)
	}
	return h.Write(ctx, all, off)
}

// Write implements gofs.FileWriter: the injected EIO, then the space
// left (a write that needs more than is left writes what fits, then
// ENOSPC), then the write, recorded as unsynced.
func (h *handle) Write(_ context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f := h.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	if failing(&f.failWrite) {
		f.stats.FailedWrites++
		return 0, syscall.EIO
	}
	if f.space >= 0 {
		size, errno := h.size()
		if errno != 0 {
			return 0, errno
		}
		if grow := off + int64(len(data)) - size; grow > 0 {
			if grow > f.space {
				fits := int64(len(data)) - (grow - f.space)
				if fits <= 0 {
					f.stats.NoSpaceWrites++
					return 0, syscall.ENOSPC
				}
				data, grow = data[:fits], f.space
			}
			f.space -= grow
		}
	}
	id := h.resolve()
	if err := f.m.preserve(id, h.src()); err != nil {
		f.log.Warn("faultfs: write", "err", err)
		return 0, syscall.EIO
	}
	n, err := unix.Pwrite(h.fd, data, off)
	if n > 0 {
		fs := f.m.file(id)
		fs.dirty = fs.dirty.add(off, off+int64(n))
	}
	if err != nil {
		return uint32(max(n, 0)), gofs.ToErrno(err)
	}
	return uint32(n), 0
}

// Fsync implements gofs.FileFsyncer: the injected delay, then the
// injected EIO (which drops the unsynced writes from the durable state),
// then the file's content becomes durable.
func (h *handle) Fsync(ctx context.Context, _ uint32) syscall.Errno {
	f := h.ffs
	f.delay(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Fsyncs++
	id := h.resolve()
	if failing(&f.failFsync) {
		f.stats.FailedFsyncs++
		f.m.drop(id)
		return syscall.EIO
	}
	if err := f.m.sync(id, h.src()); err != nil {
		f.log.Warn("faultfs: fsync", "err", err)
		return syscall.EIO
	}
	return 0
}

// Setattr implements gofs.FileSetattrer: ftruncate is recorded.
func (h *handle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		f := h.ffs
		f.mu.Lock()
		defer f.mu.Unlock()
		size, errno := h.size()
		if errno != 0 {
			return errno
		}
		if errno := f.truncating(h.resolve(), h.src(), size, int64(sz)); errno != 0 {
			return errno
		}
	}
	return h.lf.Setattr(ctx, in, out)
}

// Allocate implements gofs.FileAllocater: an allocation that grows the
// file needs space; one that changes content (punching or zeroing a
// range, collapsing or inserting) is recorded as unsynced.
func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	f := h.ffs
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, errno := h.size()
	if errno != 0 {
		return errno
	}
	end := int64(off + size)
	if mode&unix.FALLOC_FL_KEEP_SIZE == 0 && end > cur {
		if errno := f.claim(end - cur); errno != 0 {
			return errno
		}
	}
	id := h.resolve()
	if err := f.m.preserve(id, h.src()); err != nil {
		f.log.Warn("faultfs: allocate", "err", err)
		return syscall.EIO
	}
	if errno := h.lf.Allocate(ctx, off, size, mode); errno != 0 {
		return errno
	}
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		fs := f.m.file(id)
		fs.dirty = fs.dirty.add(int64(off), toEnd)
	}
	return 0
}

// claim takes n bytes of the space left, or answers ENOSPC; f.mu must be
// held.
func (f *FS) claim(n int64) syscall.Errno {
	if f.space < 0 || n <= 0 {
		return 0
	}
	if n > f.space {
		f.stats.NoSpaceWrites++
		return syscall.ENOSPC
	}
	f.space -= n
	return 0
}

// truncating records a truncation of file id (now size bytes, readable at
// src) to newSize, claiming space when it grows; f.mu must be held.
func (f *FS) truncating(id int64, src string, size, newSize int64) syscall.Errno {
	if newSize > size {
		if errno := f.claim(newSize - size); errno != 0 {
			return errno
		}
	}
	if err := f.m.preserve(id, src); err != nil {
		f.log.Warn("faultfs: truncate", "err", err)
		return syscall.EIO
	}
	f.m.truncated(id, newSize)
	return 0
}
