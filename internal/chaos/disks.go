package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/exactonce/exactonce/internal/faultfs"
)

// MountDisks puts each node's data dir on a fault filesystem of its own
// (internal/faultfs), kept in <Dir>/faultfs/nodeN, so that the disk
// faults (power loss, full disk, failing and slow fsyncs) can be
// injected. Call before the nodes start; UnmountDisks undoes it.
func (c *Cluster) MountDisks() error {
	if err := faultfs.Available(); err != nil {
		return err
	}
	for n := 1; n <= c.cfg.Nodes; n++ {
		d, err := faultfs.Mount(faultfs.Options{
			Dir:        filepath.Join(c.cfg.Dir, "faultfs", fmt.Sprintf("node%d", n)),
			Mountpoint: c.DataDir(n),
			Logger:     c.cfg.Log.With("node", n),
		})
		if err != nil {
			return errors.Join(fmt.Errorf("node%d disk: %w", n, err), c.UnmountDisks(context.Background()))
		}
		c.disks = append(c.disks, d)
	}
	return nil
}

// UnmountDisks unmounts the nodes' fault filesystems (the nodes must be
// stopped).
func (c *Cluster) UnmountDisks(ctx context.Context) error {
	var errs []error
	for _, d := range c.disks {
		errs = append(errs, d.Unmount(ctx))
	}
	c.disks = nil
	return errors.Join(errs...)
}

// UnmountStaleDisks lazily unmounts fault filesystems a crashed run left
// at the nodes' data dirs under dir.
func UnmountStaleDisks(dir string, nodes int) {
	for n := 1; n <= nodes; n++ {
		faultfs.Cleanup(filepath.Join(dir, fmt.Sprintf("node%d", n)))
	}
}

// HasDisks reports whether the nodes run on fault filesystems.
func (c *Cluster) HasDisks() bool { return len(c.disks) > 0 }

// Disk is node n's fault filesystem (nil without MountDisks).
func (c *Cluster) Disk(n int) *faultfs.FS {
	if n < 1 || n > len(c.disks) {
		return nil
	}
	return c.disks[n-1]
}

// HealDisks removes every injected disk fault (space, errors, delays).
func (c *Cluster) HealDisks() {
	for _, d := range c.disks {
		d.Heal()
	}
}

// PowerLoss drops everything node n's disk holds that no fsync made
// durable; the node must be stopped. A power loss is a reboot too: a
// state file marked open (fsm.Options.DeferSync) gets the marker of
// another boot, as reboot-node does, so that the node treats its state
// file as a machine crash left it.
func (c *Cluster) PowerLoss(ctx context.Context, n int) (faultfs.Report, error) {
	d := c.Disk(n)
	if d == nil {
		return faultfs.Report{}, fmt.Errorf("node%d has no fault filesystem", n)
	}
	if c.Running(n) {
		return faultfs.Report{}, fmt.Errorf("power loss of node%d: still running", n)
	}
	rep, err := d.PowerLoss(ctx)
	if err != nil {
		return rep, fmt.Errorf("power loss of node%d: %w", n, err)
	}
	marker := filepath.Join(c.DataDir(n), "state.db.open")
	if _, err := os.Stat(marker); err == nil {
		if err := os.WriteFile(marker, []byte("chaos-power-loss\n"), 0o600); err != nil {
			return rep, fmt.Errorf("power loss of node%d: new boot marker: %w", n, err)
		}
		// The new marker is on the disk, as the node's own would be.
		if err := d.SyncAll(); err != nil {
			return rep, fmt.Errorf("power loss of node%d: %w", n, err)
		}
	}
	return rep, nil
}

// wipeDisk empties node n's fault filesystem and makes the emptiness
// durable (the mountpoint itself stays).
func (c *Cluster) wipeDisk(n int) error {
	d := c.Disk(n)
	des, err := os.ReadDir(d.Mountpoint())
	if err != nil {
		return fmt.Errorf("wipe node%d: %w", n, err)
	}
	for _, de := range des {
		if err := os.RemoveAll(filepath.Join(d.Mountpoint(), de.Name())); err != nil {
			return fmt.Errorf("wipe node%d: %w", n, err)
		}
	}
	if err := d.SyncAll(); err != nil {
		return fmt.Errorf("wipe node%d: %w", n, err)
	}
	return nil
}
